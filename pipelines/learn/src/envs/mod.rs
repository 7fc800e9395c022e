//! Environments: the toy tasks the algorithms are checked on.

pub mod cartpole;

/// An environment with a discrete action space, as the algorithms see one.
pub trait DiscreteEnv: Send {
    /// Observation width.
    fn obs_dim(&self) -> usize;
    /// Number of actions.
    fn n_actions(&self) -> usize;
    /// Starts an episode; returns the first observation.
    fn reset(&mut self) -> Vec<f32>;
    /// One step: observation, reward, terminated (a terminal state), truncated (time limit).
    fn step(&mut self, action: usize) -> (Vec<f32>, f32, bool, bool);
}
pub mod twin;
