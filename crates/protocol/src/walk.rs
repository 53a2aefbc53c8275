//! Seeded random walks through a [`Model`]: the sequences the replay tests run against the
//! real database. No dependency: a xorshift generator is enough to pick actions.

use crate::explore::Model;

/// A small deterministic generator (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The actions of `state` that do something, with the state after each (an action that
/// breaks a step property is left out: the model check reports those).
pub fn enabled<M: Model>(model: &M, state: &M::State) -> Vec<(M::Action, M::State)> {
    let mut actions = Vec::new();
    model.actions(state, &mut actions);
    actions
        .into_iter()
        .filter_map(|action| match model.next(state, &action) {
            Some(Ok(next)) if next != *state => Some((action, next)),
            _ => None,
        })
        .collect()
}
