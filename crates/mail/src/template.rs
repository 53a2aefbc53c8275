//! The template catalog: `<dir>/<name>/subject.txt`, `body.txt`, optional `body.html`, and
//! locale variants in `<dir>/<name>/<locale>/`. Parsed whole when it is loaded, so a broken
//! template stops start-up with its file and line; rendered strictly, so a missing variable
//! is an error (the delivery is dead-lettered with reason `template`), never a blank.
//!
//! Docket's own notifications (`docket/campaign_finished`, `docket/dead_letters`) are built
//! in; a catalog may override them with its own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The files of one template (or of one of its locales).
const SUBJECT: &str = "subject.txt";
const TEXT: &str = "body.txt";
const HTML: &str = "body.html";

/// The built-in templates: (name, subject, text body).
const BUILT_IN: &[(&str, &str, &str)] = &[
    (
        "docket/campaign_finished",
        include_str!("../templates/docket/campaign_finished/subject.txt"),
        include_str!("../templates/docket/campaign_finished/body.txt"),
    ),
    (
        "docket/dead_letters",
        include_str!("../templates/docket/dead_letters/subject.txt"),
        include_str!("../templates/docket/dead_letters/body.txt"),
    ),
];

/// One template, as `docket mail templates` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TemplateInfo {
    /// Its name (the folder's path under the catalog).
    pub name: String,
    /// Its locale variants, sorted.
    pub locales: Vec<String>,
    /// Whether it has an HTML body.
    pub html: bool,
    /// Built into Docket rather than read from the catalog.
    pub built_in: bool,
}

/// A rendered message's parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The subject, on one line.
    pub subject: String,
    /// The text body.
    pub text: String,
    /// The HTML body, when the template has one.
    pub html: Option<String>,
    /// The locale variant used (`None`: the base).
    pub locale: Option<String>,
}

/// A template that does not parse, or a catalog that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A template's syntax is wrong.
    #[error("{path}:{line}: {detail}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line of the error.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A folder lacks a required file.
    #[error("{path}: missing (every template needs subject.txt and body.txt)")]
    Missing {
        /// The file that should be there.
        path: PathBuf,
    },
}

/// Rendering failed: a missing variable, a filter misused. The delivery is dead-lettered
/// with reason `template`.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No template has this name.
    #[error("no template named {name:?}{}", did_you_mean(.nearest.as_deref()))]
    Unknown {
        /// The name asked for.
        name: String,
        /// The catalog's nearest name, when one is close.
        nearest: Option<String>,
    },
    /// The template failed on these variables.
    #[error("{file}: {detail}")]
    Failed {
        /// The template file.
        file: String,
        /// What went wrong (the variable, the line).
        detail: String,
    },
}

/// `; did you mean "x"?`, or nothing; then where the names are listed.
fn did_you_mean(nearest: Option<&str>) -> String {
    match nearest {
        Some(name) => format!("; did you mean {name:?}? (docket mail templates lists them)"),
        None => " (docket mail templates lists them)".to_owned(),
    }
}

/// The parsed catalog.
pub struct Catalog {
    env: Environment<'static>,
    templates: BTreeMap<String, TemplateInfo>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("templates", &self.templates.keys())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Only the built-in templates.
    pub fn built_in() -> Catalog {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut templates = BTreeMap::new();
        for (name, subject, text) in BUILT_IN {
            env.add_template_owned(format!("{name}/{SUBJECT}"), *subject)
                .expect("built-in templates parse (tested)");
            env.add_template_owned(format!("{name}/{TEXT}"), *text)
                .expect("built-in templates parse (tested)");
            templates.insert(
                (*name).to_owned(),
                TemplateInfo {
                    name: (*name).to_owned(),
                    locales: Vec::new(),
                    html: false,
                    built_in: true,
                },
            );
        }
        Catalog { env, templates }
    }

    /// Reads and parses every template under `dir` (over the built-in ones). A missing
    /// folder is an empty catalog.
    ///
    /// # Errors
    ///
    /// [`CatalogError`] with the file (and line) of the first problem.
    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::built_in();
        if !dir.exists() {
            return Ok(catalog);
        }
        let mut folders = Vec::new();
        collect_template_folders(dir, dir, &mut folders)?;
        for (name, folder) in folders {
            let mut info = TemplateInfo {
                name: name.clone(),
                locales: Vec::new(),
                html: false,
                built_in: false,
            };
            info.html = catalog.add_variant(&name, &folder)?;
            for entry in read_dir(&folder)? {
                let path = entry.path();
                if path.is_dir() && path.join(SUBJECT).exists() {
                    let locale = entry.file_name().to_string_lossy().into_owned();
                    catalog.add_variant(&format!("{name}/{locale}"), &path)?;
                    info.locales.push(locale);
                }
            }
            info.locales.sort();
            catalog.templates.insert(name, info);
        }
        Ok(catalog)
    }

    /// Adds one folder's files as `<key>/subject.txt`, ...; returns whether it has HTML.
    fn add_variant(&mut self, key: &str, folder: &Path) -> Result<bool, CatalogError> {
        let mut html = false;
        for file in [SUBJECT, TEXT, HTML] {
            let path = folder.join(file);
            if !path.exists() {
                if file == HTML {
                    continue;
                }
                return Err(CatalogError::Missing { path });
            }
            let source = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            self.env
                .add_template_owned(format!("{key}/{file}"), source)
                .map_err(|err| CatalogError::Syntax {
                    path: path.clone(),
                    line: err.line().unwrap_or(1),
                    detail: err
                        .detail()
                        .map_or_else(|| err.kind().to_string(), ToOwned::to_owned),
                })?;
            html |= file == HTML;
        }
        Ok(html)
    }

    /// Every template, sorted by name.
    pub fn list(&self) -> Vec<TemplateInfo> {
        self.templates.values().cloned().collect()
    }

    /// The error for a name the catalog lacks: the nearest name it has, when one is close
    /// (at most three edits, any case).
    pub fn unknown(&self, name: &str) -> RenderError {
        let wanted = name.to_lowercase();
        let nearest = self
            .templates
            .keys()
            .map(|known| (strsim::levenshtein(&known.to_lowercase(), &wanted), known))
            .filter(|(distance, _)| *distance <= 3)
            .min()
            .map(|(_, known)| known.clone());
        RenderError::Unknown {
            name: name.to_owned(),
            nearest,
        }
    }

    /// Whether a template of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.templates.contains_key(name)
    }

    /// The variables template `name` needs, over every file of its base and of each locale
    /// variant (a recipient of any locale must give them all): the names its subject and
    /// bodies read that they do not set themselves, without the environment's own functions
    /// (`range`, ...) and without those it treats as optional somewhere (`x | default(…)`,
    /// `x is defined`). `None` when no template has this name.
    pub fn variables(&self, name: &str) -> Option<std::collections::BTreeSet<String>> {
        let info = self.templates.get(name)?;
        let globals: std::collections::HashSet<&str> =
            self.env.globals().map(|(name, _)| name).collect();
        let mut variables = std::collections::BTreeSet::new();
        let mut optional = std::collections::BTreeSet::new();
        let keys = std::iter::once(name.to_owned())
            .chain(info.locales.iter().map(|locale| format!("{name}/{locale}")));
        for key in keys {
            for file in [SUBJECT, TEXT, HTML] {
                if let Ok(template) = self.env.get_template(&format!("{key}/{file}")) {
                    optional.extend(
                        template
                            .undeclared_variables(false)
                            .into_iter()
                            .filter(|variable| optional_in(template.source(), variable)),
                    );
                    variables.extend(
                        template
                            .undeclared_variables(false)
                            .into_iter()
                            .filter(|variable| !globals.contains(variable.as_str())),
                    );
                }
            }
        }
        variables.retain(|variable| !optional.contains(variable));
        Some(variables)
    }

    /// Renders `name` in the recipient's `locale` (`pt-BR`, then `pt`, then the base).
    ///
    /// # Errors
    ///
    /// [`RenderError`] for an unknown template or one that fails on these variables.
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        vars: &serde_json::Value,
    ) -> Result<Rendered, RenderError> {
        let info = self.templates.get(name).ok_or_else(|| self.unknown(name))?;
        let chosen = locale.and_then(|wanted| {
            let language = wanted.split(['-', '_']).next().unwrap_or(wanted);
            [wanted, language]
                .into_iter()
                .find(|candidate| info.locales.iter().any(|l| l == candidate))
                .map(str::to_owned)
        });
        let key = match &chosen {
            Some(locale) => format!("{name}/{locale}"),
            None => name.to_owned(),
        };
        let render = |file: &str| -> Result<Option<String>, RenderError> {
            let Ok(template) = self.env.get_template(&format!("{key}/{file}")) else {
                return Ok(None);
            };
            template.render(vars).map(Some).map_err(|err| {
                // minijinja's own text says "undefined value" and the line; name the
                // variables the caller did not give, so the fix is obvious.
                let mut missing: Vec<String> = template
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|name| vars.get(name).is_none())
                    .collect();
                missing.sort();
                let detail = if missing.is_empty() {
                    err.to_string()
                } else {
                    format!("{err}; missing variables: {}", missing.join(", "))
                };
                RenderError::Failed {
                    file: format!("{key}/{file}"),
                    detail,
                }
            })
        };
        let subject = render(SUBJECT)?.unwrap_or_default();
        Ok(Rendered {
            // A header is one line: the subject's own line breaks become spaces.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: render(TEXT)?.unwrap_or_default(),
            html: render(HTML)?
                .map(|html| {
                    unsafe_link(&html).map_or(Ok(html), |url| {
                        Err(RenderError::Failed {
                            file: format!("{key}/{HTML}"),
                            detail: format!(
                                "a link's URL has the scheme {url:?}: only http, https, \
                                 mailto, tel and relative links are sent"
                            ),
                        })
                    })
                })
                .transpose()?,
            locale: chosen,
        })
    }
}

/// Whether a template's source treats `variable` as optional somewhere: `variable |
/// default(…)` (or `| d(…)`), `variable is defined`, `is undefined`, `is not defined`.
fn optional_in(source: &str, variable: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    source.match_indices(variable).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let rest = &source[at + variable.len()..];
        if before.is_some_and(|c| word(c) || c == '.') || rest.starts_with(word) {
            return false;
        }
        let rest = rest.trim_start();
        if let Some(filter) = rest.strip_prefix('|') {
            let filter = filter.trim_start();
            let name: String = filter.chars().take_while(|c| word(*c)).collect();
            return name == "default" || name == "d";
        }
        let Some(test) = rest.strip_prefix("is") else {
            return false;
        };
        let mut words = test.split_whitespace();
        let first = words.next().unwrap_or("");
        let test = if first == "not" {
            words.next().unwrap_or("")
        } else {
            first
        };
        let test: String = test.chars().take_while(|c| word(*c)).collect();
        test == "defined" || test == "undefined"
    })
}

/// The schemes a link in an HTML body may have (or none: a relative link).
const LINK_SCHEMES: &[&str] = &["http", "https", "mailto", "tel"];

/// The scheme of the first `href`, `src` or `action` value in `html` that is not one of
/// [`LINK_SCHEMES`] (`javascript:`, `data:`, `vbscript:`, ...), as a browser would read it:
/// character references decoded, tabs, line breaks and spaces dropped, in any case. A
/// variable's value that a template puts in a link cannot make it run script.
fn unsafe_link(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = ["href=", "src=", "action="]
        .iter()
        .filter_map(|attr| lower[from..].find(attr).map(|at| (from + at, attr.len())))
        .min()
    {
        let (at, len) = found;
        let start = at + len;
        from = start;
        // Only an attribute: preceded by a space (`data-href=` is another attribute).
        if !html[..at].ends_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let rest = &html[start..];
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => rest[1..].split(quote).next().unwrap_or(""),
            _ => rest
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
        };
        let url: String = decode_references(value)
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .collect::<String>()
            .to_ascii_lowercase();
        let Some((scheme, _)) = url.split_once(':') else {
            continue;
        };
        let is_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme && !LINK_SCHEMES.contains(&scheme) {
            return Some(scheme.to_owned());
        }
    }
    None
}

/// `&#58;`, `&#x3a;` and the named `&colon;`, `&tab;`, `&newline;` decoded (what a
/// browser decodes in an attribute before it reads a URL's scheme).
fn decode_references(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').unwrap_or(0);
        let entity = rest[1..end.max(1)].to_ascii_lowercase();
        let decoded = match entity.as_str() {
            "colon" => Some(':'),
            "tab" => Some('\t'),
            "newline" => Some('\n'),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|n| n.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) if end > 0 => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A template folder is one with a `subject.txt`; its name is its path under the catalog.
/// Locale folders (inside a template folder) are read by the template itself.
fn collect_template_folders(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), CatalogError> {
    for entry in read_dir(dir)? {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.join(SUBJECT).exists() || path.join(TEXT).exists() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((name, path));
        } else {
            collect_template_folders(root, &path, out)?;
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, CatalogError> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|source| CatalogError::Read {
            path: dir.to_owned(),
            source,
        })?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(files: &[(&str, &str)]) -> (PathBuf, Result<Catalog, CatalogError>) {
        let dir = std::env::temp_dir().join(format!("docket-templates-{}", uuid::Uuid::now_v7()));
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let loaded = Catalog::load(&dir);
        (dir, loaded)
    }

    #[test]
    fn an_unknown_template_names_the_nearest() {
        let (_, loaded) = catalog(&[
            ("newsletter/subject.txt", "News"),
            ("newsletter/body.txt", "Hi"),
        ]);
        let catalog = loaded.unwrap();
        let err = catalog
            .render("newsleter", None, &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no template named \"newsleter\"; did you mean \"newsletter\"? \
             (docket mail templates lists them)"
        );
        let err = catalog.unknown("invoice").to_string();
        assert_eq!(
            err,
            "no template named \"invoice\" (docket mail templates lists them)"
        );
    }

    #[test]
    fn the_locale_falls_back_from_region_to_language_to_base() {
        let (_, loaded) = catalog(&[
            ("reset/subject.txt", "Reset"),
            ("reset/body.txt", "Hello {{ name }}"),
            ("reset/pt/subject.txt", "Redefinir"),
            ("reset/pt/body.txt", "Olá {{ name }}"),
        ]);
        let catalog = loaded.unwrap();
        let vars = serde_json::json!({"name": "Ana"});
        let pt_br = catalog.render("reset", Some("pt-BR"), &vars).unwrap();
        assert_eq!(
            (pt_br.subject.as_str(), pt_br.text.as_str()),
            ("Redefinir", "Olá Ana")
        );
        assert_eq!(pt_br.locale.as_deref(), Some("pt"));
        let fr = catalog.render("reset", Some("fr"), &vars).unwrap();
        assert_eq!(fr.text, "Hello Ana");
        assert_eq!(fr.locale, None);
    }

    /// A variable that puts a `javascript:` URL into a link of an HTML body is refused,
    /// however it is spelled; web and mail links pass.
    #[test]
    fn script_urls_in_html_links_are_refused() {
        let (_, loaded) = catalog(&[
            ("news/subject.txt", "News"),
            ("news/body.txt", "{{ link }}"),
            ("news/body.html", "<p><a href=\"{{ link }}\">Read</a></p>"),
        ]);
        let catalog = loaded.unwrap();
        for bad in [
            "javascript:alert(1)",
            " JaVaScRiPt:alert(1)",
            "java\tscript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox",
        ] {
            let err = catalog
                .render("news", None, &serde_json::json!({ "link": bad }))
                .unwrap_err()
                .to_string();
            assert!(err.contains("news/body.html"), "{bad}: {err}");
        }
        for good in [
            "https://example.com/a?b=1&c=2",
            "mailto:ann@example.com",
            "/unsubscribe/42",
            "page#section:2",
        ] {
            let rendered = catalog
                .render("news", None, &serde_json::json!({ "link": good }))
                .unwrap_or_else(|err| panic!("{good}: {err}"));
            assert!(rendered.html.unwrap().contains("Read"));
        }
        assert_eq!(
            unsafe_link("<a href='&#106;avascript&#58;x'>"),
            Some("javascript".into())
        );
        assert_eq!(
            unsafe_link("<a data-href=\"javascript:x\" href=\"/ok\">"),
            None
        );
    }

    #[test]
    fn a_broken_template_names_its_file_and_line() {
        let (dir, loaded) = catalog(&[
            ("welcome/subject.txt", "Hi"),
            (
                "welcome/body.txt",
                "line one\nline two {{ name | }}\nline three",
            ),
        ]);
        let err = loaded.unwrap_err().to_string();
        let file = dir.join("welcome/body.txt");
        assert!(err.starts_with(&format!("{}:2:", file.display())), "{err}");
    }

    #[test]
    fn a_missing_variable_is_an_error_that_names_it() {
        let (_, loaded) = catalog(&[
            ("welcome/subject.txt", "Hi {{ name }}"),
            ("welcome/body.txt", "{{ link }}"),
        ]);
        let err = loaded
            .unwrap()
            .render("welcome", None, &serde_json::json!({"name": "Ann"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("welcome/body.txt"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn the_built_in_notifications_render() {
        let catalog = Catalog::built_in();
        let done = catalog
            .render(
                "docket/campaign_finished",
                None,
                &serde_json::json!({"campaign": {"id": "c1", "name": "November", "total": 3, "sent": 2,
                    "suppressed": 0, "failed": 1, "dead_letter": 0, "expired": 0}}),
            )
            .unwrap();
        assert!(done.subject.contains("November"), "{}", done.subject);
        let dead = catalog
            .render(
                "docket/dead_letters",
                None,
                &serde_json::json!({"count": 2, "since": "t0", "until": "t1",
                    "jobs": [{"id": "j1", "kind": "k", "queue": "q", "reason": "r", "last_error": "e"}]}),
            )
            .unwrap();
        assert!(dead.text.contains("j1"), "{}", dead.text);
    }
}
