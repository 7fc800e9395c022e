//! CartPole-v1 as Gymnasium defines it: a pole on a cart, pushed left or right with 10 N; +1 per
//! step; the episode terminates when the pole leans past 12° or the cart leaves ±2.4, and is
//! truncated at 500 steps. Explicit Euler with τ = 0.02 s (Gymnasium's default integrator);
//! initial state uniform in ±0.05.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::DiscreteEnv;

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
const HALF_LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * HALF_LENGTH;
const FORCE: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_LIMIT: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_LIMIT: f64 = 2.4;
const MAX_STEPS: u32 = 500;

/// The environment.
#[derive(Debug, Clone)]
pub struct CartPole {
    state: [f64; 4],
    steps: u32,
    rng: ChaCha8Rng,
}

impl CartPole {
    /// A seeded environment.
    pub fn new(seed: u64) -> Self {
        Self {
            state: [0.0; 4],
            steps: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn obs(&self) -> Vec<f32> {
        self.state.iter().map(|&v| v as f32).collect()
    }
}

impl DiscreteEnv for CartPole {
    fn obs_dim(&self) -> usize {
        4
    }

    fn n_actions(&self) -> usize {
        2
    }

    fn reset(&mut self) -> Vec<f32> {
        for v in &mut self.state {
            *v = self.rng.random_range(-0.05..0.05);
        }
        self.steps = 0;
        self.obs()
    }

    fn step(&mut self, action: usize) -> (Vec<f32>, f32, bool, bool) {
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { FORCE } else { -FORCE };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
        self.steps += 1;
        let terminated = self.state[0].abs() > X_LIMIT || self.state[2].abs() > THETA_LIMIT;
        let truncated = !terminated && self.steps >= MAX_STEPS;
        (self.obs(), 1.0, terminated, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_pushing_one_way_falls_quickly_and_the_limit_truncates() {
        let mut env = CartPole::new(1);
        env.reset();
        let mut n = 0;
        loop {
            n += 1;
            let (_, r, term, trunc) = env.step(1);
            assert_eq!(r, 1.0);
            assert!(!trunc);
            if term {
                break;
            }
        }
        assert!((5..60).contains(&n), "{n}");
        // A balanced start, untouched dynamics aside, is truncated at 500 steps at the latest.
        let mut env = CartPole::new(2);
        env.reset();
        env.state = [0.0; 4];
        let mut steps = 0;
        let mut last = (false, false);
        for k in 0..600 {
            let (_, _, te, tr) = env.step(k % 2);
            steps += 1;
            last = (te, tr);
            if te || tr {
                break;
            }
        }
        assert!(steps <= 500 && (last.0 || last.1));
    }
}
