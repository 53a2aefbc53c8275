//! A small exhaustive explorer: breadth-first over every reachable state of a [`Model`],
//! each state stored once (hashed), every invariant checked on every state and every
//! step property on every transition, and a shortest trace to the first violation.
//!
//! Liveness is checked as "from every reachable state the goal can still be reached"
//! (AG EF): the transitions a goal allows are kept, and a backward search from the goal
//! states must reach every state. That finds states from which progress is impossible
//! (a job nobody can ever finish), not runs that merely could go on for ever.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A system as states and actions.
pub trait Model {
    /// A state: hashed and stored once.
    type State: Clone + Eq + Hash + Debug;
    /// One step.
    type Action: Clone + Debug;

    /// The initial states.
    fn init(&self) -> Vec<Self::State>;

    /// Every action that may be taken in `state` (an action may turn out a no-op).
    fn actions(&self, state: &Self::State, out: &mut Vec<Self::Action>);

    /// The state after `action`: `None` when it does nothing here, `Err` when taking it
    /// breaks a step property (the message says which).
    fn next(
        &self,
        state: &Self::State,
        action: &Self::Action,
    ) -> Option<Result<Self::State, String>>;

    /// The invariants: `Err` names the one `state` breaks.
    fn invariant(&self, state: &Self::State) -> Result<(), String>;

    /// `state` in a canonical form (fresh identifiers renumbered), so that states that
    /// differ only in names are stored once.
    fn canonical(&self, state: Self::State) -> Self::State {
        state
    }

    /// The liveness goals: each must stay reachable from every reachable state.
    fn goals(&self) -> Vec<Goal<Self>> {
        Vec::new()
    }

    /// One line that shows `state` in a trace.
    fn show(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// A liveness goal: from every reachable state, some sequence of `allowed` actions leads to
/// a state where `reached` holds.
pub struct Goal<M: Model + ?Sized> {
    /// What the goal says, for the report.
    pub name: &'static str,
    /// The states that reach it.
    pub reached: fn(&M, &M::State) -> bool,
    /// The actions a path to it may take (the system's own, without further faults).
    pub allowed: fn(&M::Action) -> bool,
}

/// What a check found.
#[derive(Debug)]
pub struct Report {
    /// Distinct states reached.
    pub states: usize,
    /// Transitions taken (including those to states already seen).
    pub transitions: usize,
    /// The longest shortest path to a state.
    pub depth: usize,
    /// How long the search took.
    pub elapsed: Duration,
    /// The first property broken, with the shortest trace to it; `None`: all hold.
    pub violation: Option<Violation>,
}

/// A property broken, and how.
#[derive(Debug)]
pub struct Violation {
    /// Which property, and what broke it.
    pub property: String,
    /// From an initial state, each action taken and the state after it.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "violated: {}", self.property)?;
        for (i, line) in self.trace.iter().enumerate() {
            writeln!(f, "{i:>3}. {line}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} states, {} transitions, depth {}, {:.1?}",
            self.states, self.transitions, self.depth, self.elapsed
        )?;
        if let Some(violation) = &self.violation {
            write!(f, "\n{violation}")?;
        }
        Ok(())
    }
}

/// How a state was first reached: its parent's number and the action (none for an
/// initial state).
struct Origin<A> {
    parent: u32,
    action: Option<A>,
}

/// Every state found so far, with how it was first reached and what the goals say of it.
struct Graph<'m, M: Model> {
    model: &'m M,
    goals: Vec<Goal<M>>,
    seen: HashMap<M::State, u32>,
    origins: Vec<Origin<M::Action>>,
    depths: Vec<u16>,
    /// Per goal: whether each state reaches it, and the allowed transitions, reversed.
    reached: Vec<Vec<bool>>,
    edges: Vec<Vec<(u32, u32)>>,
    frontier: VecDeque<(u32, M::State)>,
}

impl<M: Model> Graph<'_, M> {
    /// Adds `state` if it is new: its number, and the invariant it breaks (only when new).
    fn add(&mut self, state: M::State, origin: Origin<M::Action>) -> (u32, Option<String>) {
        let depth = match origin.parent {
            u32::MAX => 0,
            parent => self.depths[parent as usize] + 1,
        };
        match self.seen.entry(state) {
            Entry::Occupied(known) => (*known.get(), None),
            Entry::Vacant(slot) => {
                let id = self.origins.len() as u32;
                let state = slot.key().clone();
                slot.insert(id);
                self.origins.push(origin);
                self.depths.push(depth);
                for (goal, reached) in self.goals.iter().zip(self.reached.iter_mut()) {
                    reached.push((goal.reached)(self.model, &state));
                }
                let broken = self.model.invariant(&state).err();
                self.frontier.push_back((id, state));
                (id, broken)
            }
        }
    }
}

/// Explores every state of `model` reachable within its bounds, stopping at the first
/// violation (at most `max_states` states: past that the report says so as a violation).
pub fn check<M: Model>(model: &M, max_states: usize) -> Report {
    let started = Instant::now();
    let goals = model.goals();
    let count = goals.len();
    let mut graph = Graph {
        model,
        goals,
        seen: HashMap::new(),
        origins: Vec::new(),
        depths: Vec::new(),
        reached: vec![Vec::new(); count],
        edges: vec![Vec::new(); count],
        frontier: VecDeque::new(),
    };
    let mut transitions = 0usize;
    let mut actions = Vec::new();
    let mut violation = None;

    for state in model.init() {
        let origin = Origin {
            parent: u32::MAX,
            action: None,
        };
        let (id, broken) = graph.add(model.canonical(state), origin);
        if let Some(property) = broken {
            violation = Some((property, id, None));
            break;
        }
    }
    'search: while violation.is_none() {
        let Some((id, state)) = graph.frontier.pop_front() else {
            break;
        };
        if graph.origins.len() > max_states {
            violation = Some((
                format!("more than {max_states} states: bounds too large"),
                id,
                None,
            ));
            break;
        }
        actions.clear();
        model.actions(&state, &mut actions);
        for action in actions.drain(..) {
            let Some(next) = model.next(&state, &action) else {
                continue;
            };
            transitions += 1;
            let next = match next {
                Ok(next) => model.canonical(next),
                Err(property) => {
                    violation = Some((property, id, Some(action)));
                    break 'search;
                }
            };
            let origin = Origin {
                parent: id,
                action: Some(action.clone()),
            };
            let (to, broken) = graph.add(next, origin);
            for (goal, edges) in graph.goals.iter().zip(graph.edges.iter_mut()) {
                if to != id && (goal.allowed)(&action) {
                    edges.push((to, id));
                }
            }
            if let Some(property) = broken {
                violation = Some((property, to, None));
                break 'search;
            }
        }
    }

    let Graph {
        goals,
        origins,
        depths,
        reached,
        mut edges,
        ..
    } = graph;
    let violation = match violation {
        Some((property, id, last)) => Some(Violation {
            property,
            trace: trace(model, &origins, id, last),
        }),
        None => goals
            .iter()
            .zip(reached.iter())
            .zip(edges.iter_mut())
            .find_map(|((goal, reached), edges)| {
                let stuck = unreachable_goal(reached, edges)?;
                Some(Violation {
                    property: format!(
                        "liveness: {} (no longer reachable from the last state)",
                        goal.name
                    ),
                    trace: trace(model, &origins, stuck, None),
                })
            }),
    };
    Report {
        states: origins.len(),
        transitions,
        depth: depths.iter().copied().max().unwrap_or(0) as usize,
        elapsed: started.elapsed(),
        violation,
    }
}

/// A state from which no state in `reached` can be reached over `edges` (reversed:
/// `(to, from)`), the one found first (the lowest number: a shortest trace); `None` when
/// every state can reach one.
fn unreachable_goal(reached: &[bool], edges: &mut [(u32, u32)]) -> Option<u32> {
    edges.sort_unstable();
    let mut can = reached.to_vec();
    let mut queue: Vec<u32> = (0..can.len() as u32).filter(|&s| can[s as usize]).collect();
    while let Some(to) = queue.pop() {
        let start = edges.partition_point(|&(t, _)| t < to);
        for &(t, from) in &edges[start..] {
            if t != to {
                break;
            }
            if !can[from as usize] {
                can[from as usize] = true;
                queue.push(from);
            }
        }
    }
    can.iter().position(|&c| !c).map(|s| s as u32)
}

/// The actions from an initial state to state `id` (then `last`, the action that broke a
/// step property), each with the state after it, replayed through the model.
fn trace<M: Model>(
    model: &M,
    origins: &[Origin<M::Action>],
    id: u32,
    last: Option<M::Action>,
) -> Vec<String> {
    let mut path = Vec::new();
    let mut at = id;
    while at != u32::MAX {
        let origin = &origins[at as usize];
        path.push(origin.action.clone());
        at = origin.parent;
    }
    path.reverse();
    // The first entry is the initial state's (no action): find which initial state.
    let mut lines = Vec::new();
    let mut state = first_state(model, origins, id);
    lines.push(format!("initially: {}", model.show(&state)));
    for action in path.into_iter().flatten().chain(last) {
        match model.next(&state, &action) {
            Some(Ok(next)) => {
                state = model.canonical(next);
                lines.push(format!("{action:?}\n       → {}", model.show(&state)));
            }
            Some(Err(property)) => {
                lines.push(format!("{action:?}\n       ✗ {property}"));
                break;
            }
            None => lines.push(format!("{action:?} (did nothing)")),
        }
    }
    lines
}

fn first_state<M: Model>(model: &M, origins: &[Origin<M::Action>], id: u32) -> M::State {
    let mut at = id;
    while origins[at as usize].parent != u32::MAX {
        at = origins[at as usize].parent;
    }
    let init: Vec<M::State> = model
        .init()
        .into_iter()
        .map(|s| model.canonical(s))
        .collect();
    init[at as usize].clone()
}
