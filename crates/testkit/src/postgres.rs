//! The PostgreSQL server that tests (and `docket demo`) talk to: `DATABASE_URL` when it
//! is set, otherwise a private throwaway cluster started from the installed binaries.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// A throwaway PostgreSQL cluster: `initdb` into a fresh temporary directory, started with
/// `pg_ctl` listening only on a Unix socket inside that directory.
///
/// It is removed when dropped, and also when the process ends any other way (panic,
/// `exit`, a signal, `kill -9`): a watchdog shell reads a pipe that only this process
/// holds open, and when the pipe closes it stops the server and deletes the directory.
pub struct ThrowawayCluster {
    /// The temporary directory: `data/` and the socket.
    dir: PathBuf,
    /// The binaries' directory.
    bin: PathBuf,
    /// Whether the binaries run as the `postgres` system user (we are root).
    as_postgres: bool,
    /// Closing this pipe tells the watchdog to clean up.
    watchdog: Mutex<Option<ChildStdin>>,
}

/// The socket's port number: only its file name, since the cluster opens no TCP port.
const PORT: u16 = 5432;

impl ThrowawayCluster {
    /// Creates and starts a cluster. Takes a second or two.
    ///
    /// # Errors
    ///
    /// When no PostgreSQL binaries are found (on `PATH` or under
    /// `/usr/lib/postgresql/*/bin`), or `initdb` or `pg_ctl` fails (its output is in the
    /// message).
    pub fn start() -> io::Result<Self> {
        let bin = find_binaries()?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "docket-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            chown_to_postgres(&dir)?;
        }
        let cluster = ThrowawayCluster {
            dir,
            bin,
            as_postgres,
            watchdog: Mutex::new(None),
        };
        cluster.spawn_watchdog()?;
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        // Durability is pointless for a throwaway cluster: fsync off makes it fast.
        let server_options = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-o".as_ref(),
                server_options.as_ref(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        )?;
        Ok(cluster)
    }

    /// A connection URL for `database` as the `postgres` superuser, over the socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}&port={PORT}",
            self.dir.display()
        )
    }

    /// Restarts the server at once (`pg_ctl restart -m immediate`): every connection is
    /// cut, as when a primary crashes and comes back. Returns once it accepts connections.
    ///
    /// # Errors
    ///
    /// When `pg_ctl` fails (its output and the server's log are in the message).
    pub fn restart(&self) -> io::Result<()> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "restart".as_ref(),
            ],
        )
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> io::Result<()> {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(io::Error::other(format!(
            "{program} failed ({}): {}{}\n{log}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }

    /// Starts the shell that cleans up once this process's end of its stdin closes. It
    /// ignores the terminal's signals, so a Ctrl-C that ends us does not end it first.
    fn spawn_watchdog(&self) -> io::Result<()> {
        let stop = format!(
            "{} '{}' -D '{}' stop -m immediate",
            if self.as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display()
        );
        let script = format!(
            "trap '' INT TERM HUP; cat >/dev/null; {stop} >/dev/null 2>&1; rm -rf '{}'",
            self.dir.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        *self.watchdog.lock().unwrap() = child.stdin;
        Ok(())
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args([
                "-D".as_ref(),
                data.as_os_str(),
                "stop".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        // Let the watchdog go: there is nothing left for it to do.
        if let Some(mut pipe) = self.watchdog.lock().unwrap().take() {
            let _ = pipe.flush();
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_binaries() -> io::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    if let Some(dir) = on_path {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under \
             /usr/lib/postgresql/*/bin: install PostgreSQL (apt-get install postgresql) \
             or set DATABASE_URL",
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_to_postgres(dir: &Path) -> io::Result<()> {
    let id = |flag: &str| -> io::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other("running as root but there is no `postgres` system user"))
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))
}

/// Where the tests' server is.
pub enum Server {
    /// `DATABASE_URL` was set: a server someone else runs.
    External(String),
    /// A throwaway cluster of this process.
    Throwaway(ThrowawayCluster),
}

impl Server {
    /// A connection URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        match self {
            Server::External(url) => {
                let mut url = url::Url::parse(url).expect("DATABASE_URL is a valid URL");
                url.set_path(database);
                url.to_string()
            }
            Server::Throwaway(cluster) => cluster.url(database),
        }
    }
}

/// The process-wide test server: `DATABASE_URL` if set, else a throwaway cluster started
/// on first use and removed when the process ends.
///
/// # Panics
///
/// When the throwaway cluster cannot start: no test can run without a database.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Server::External(url),
        _ => Server::Throwaway(
            ThrowawayCluster::start()
                .unwrap_or_else(|err| panic!("cannot start PostgreSQL: {err}")),
        ),
    })
}
