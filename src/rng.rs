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

    /// Seeding burn anywhere else would reopen the race: a seed outside the lock moves the RNG
    /// under another thread's seeded draws.
    #[test]
    fn only_this_module_seeds_burn() {
        let mut stack = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("rng.rs") {
                    seen += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    let seeds = text.lines().filter(|l| {
                        let l = l.replace(' ', "");
                        l.contains("B::seed(") || l.contains("Backend>::seed(")
                    });
                    assert_eq!(
                        seeds.count(),
                        0,
                        "{} seeds burn's RNG: use rng::seeded",
                        path.display()
                    );
                }
            }
        }
        assert!(seen > 20, "read only {seen} source files");
    }

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
