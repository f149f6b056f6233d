//! burn's random number generator: seeding it and drawing from it under one process-wide lock.
//!
//! burn's CPU backend keeps one global RNG, shared by every thread, and draws a module's
//! parameters lazily, on first use. Two models seeded alike get equal parameters only if
//! nothing else draws between the seed and the last parameter: concurrent runs (`--workers`)
//! and the library's parallel tests therefore draw only inside [`seeded`].

use burn::prelude::*;
use std::sync::Mutex;

static RNG: Mutex<()> = Mutex::new(());

/// Runs `draw` with burn's RNG seeded to `seed`, holding the lock every caller shares.
///
/// `draw` must finish its draws before it returns: a model must be created *and* have every
/// parameter touched (one forward pass does), or its parameters are drawn later, unlocked.
pub fn seeded<B: Backend, T>(device: &B::Device, seed: u64, draw: impl FnOnce() -> T) -> T {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, seed);
    draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::FlexDevice;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    /// Two draws in a row from one seed, while another thread keeps drawing from the same RNG.
    #[test]
    fn a_seed_gives_the_same_draws_while_other_threads_draw() {
        let draws = || -> Vec<f32> {
            seeded::<Flex, _>(&FlexDevice, 5, || {
                let a = Tensor::<Flex, 1>::random([64], Distribution::Default, &FlexDevice);
                let b = Tensor::<Flex, 1>::random([64], Distribution::Default, &FlexDevice);
                Tensor::cat(vec![a, b], 0).into_data().to_vec().unwrap()
            })
        };
        let first = draws();
        let noise = std::thread::spawn(|| {
            for seed in 0..400 {
                seeded::<Flex, _>(&FlexDevice, seed, || {
                    Tensor::<Flex, 1>::random([64], Distribution::Default, &FlexDevice)
                });
            }
        });
        for _ in 0..200 {
            assert_eq!(draws(), first);
        }
        noise.join().unwrap();
        assert_ne!(
            first[..64],
            first[64..],
            "the second draw continues the sequence"
        );
    }
}
