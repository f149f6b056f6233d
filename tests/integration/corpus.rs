//! Real corpora: text and token-file corpora, BPE, the token cache, n-gram baselines,
//! repeated epochs, and corpus errors.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

#[test]
fn text_and_token_file_corpora_train() {
    let dir = tmp("corpora");
    // A text corpus (a glob over two files) and the same bytes as a u16 token file.
    let lang = scalelab::corpus::SynthLang::builtin(9, 2);
    let text = lang.generate(1, 40_000).bytes;
    std::fs::write(dir.join("a.txt"), &text[..20_000]).unwrap();
    std::fs::write(dir.join("b.txt"), &text[20_000..]).unwrap();
    let tokens: Vec<u8> = text
        .iter()
        .flat_map(|&b| (b as u16).to_le_bytes())
        .collect();
    std::fs::write(dir.join("tok.bin"), tokens).unwrap();
    for (name, corpus) in [
        ("text", "  text: \"*.txt\"\n"),
        ("tokens", "  tokens: tok.bin\n  vocab_size: 256\n"),
    ] {
        let spec = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &spec,
            BASE.replace(
                "name: t\n",
                &format!("name: t\ncorpus:\n{corpus}  eval_tokens: 512\n"),
            ),
        )
        .unwrap();
        let out = dir.join(format!("out-{name}"));
        // Relative corpus paths resolve against the current directory: run from `dir`.
        let o = Command::new(BIN)
            .args([
                "run",
                spec.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--no-report",
            ])
            .current_dir(&dir)
            .env("CI", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let runs = scalelab::store::read_runs(&out).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, scalelab::record::Status::Ok);
        assert!(
            runs[0].eval_loss < 5.0,
            "{name}: eval {}",
            runs[0].eval_loss
        );
    }
    // Bad corpus files: not UTF-8, and a token id above vocab_size.
    std::fs::write(dir.join("bad.txt"), [b'o', b'k', 0xff, 0xfe]).unwrap();
    let spec = dir.join("badtext.yaml");
    std::fs::write(
        &spec,
        BASE.replace("name: t\n", "name: t\ncorpus:\n  text: bad.txt\n"),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["run", spec.to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_user_error(&o, &["bad.txt", "not UTF-8", "offset 2"]);
    let spec = dir.join("badtok.yaml");
    std::fs::write(
        &spec,
        BASE.replace(
            "name: t\n",
            "name: t\ncorpus:\n  tokens: tok.bin\n  vocab_size: 100\n",
        ),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["run", spec.to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_user_error(&o, &["tok.bin", "vocab_size"]);
}

/// English-like text: words drawn from a Zipf-ish vocabulary, in lines.
fn wordy_text(words: usize, seed: u64) -> String {
    let vocab = [
        "the", "and", "of", "to", "a", "in", "that", "is", "my", "thou", "with", "not", "his",
        "be", "your", "lord", "king", "love", "shall", "will", "what", "sweet", "night", "honour",
        "crown", "heaven", "speak", "madam", "sword", "father",
    ];
    let mut rng = scalelab::hashing::Rng::new(seed);
    let mut s = String::new();
    for k in 0..words {
        let r = rng.next_f64();
        s.push_str(vocab[((r * r) * vocab.len() as f64) as usize]);
        s.push(if k % 11 == 10 { '\n' } else { ' ' });
    }
    s
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("CI", "1")
        .output()
        .unwrap()
}

#[test]
fn bpe_corpus_cache_baselines_and_repeated_epochs() {
    let dir = tmp("bpe");
    std::fs::create_dir_all(dir.join("corpus/sub")).unwrap();
    std::fs::write(dir.join("corpus/a.txt"), wordy_text(30_000, 1)).unwrap();
    std::fs::write(dir.join("corpus/sub/b.txt"), wordy_text(30_000, 2)).unwrap();
    // A folder corpus, BPE 300, 20k unique training tokens: the 40k-token run repeats them.
    let spec = dir.join("bpe.yaml");
    std::fs::write(
        &spec,
        "name: bpe\ncorpus:\n  text: corpus\n  tokenizer: bpe\n  vocab_size: 300\n  train_tokens: 20000\n  eval_tokens: 1024\n  eval_fraction: 0.05\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 32, n_layer: 1, n_head: 2}\ndata:\n  tokens: [10000, 40000]\ntraining:\n  batch_size: 8\n  lr: 1.0e-2\nbaselines:\n  orders: [1, 2, 3]\n",
    )
    .unwrap();
    let plan = |expect: &str| {
        let o = run_in(&dir, &["plan", "bpe.yaml"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(s.contains(expect), "expected {expect:?}:\n{s}");
        assert!(s.contains("held out") && s.contains("split_seed 0"), "{s}");
        s
    };
    let cache_files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("corpus/.scalelab-cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".tokens"))
            .collect();
        v.sort();
        v
    };
    plan("trained now");
    let first = cache_files();
    assert_eq!(first.len(), 1);
    // Tokenized once: the second load uses the cache.
    plan("from cache");
    assert_eq!(cache_files(), first);
    // A changed corpus invalidates it (and the stale cache is removed).
    std::fs::write(dir.join("corpus/c.txt"), wordy_text(2_000, 3)).unwrap();
    plan("trained now");
    let second = cache_files();
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);

    let o = run_in(&dir, &["run", "bpe.yaml", "--out", "out", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("out");
    // tokenizer.json is saved with the results and round-trips text.
    let bpe = scalelab::tokenize::Bpe::from_json(
        &std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let sample = "the king shall speak, my lord\n";
    assert_eq!(bpe.decode(&bpe.encode(sample).unwrap()).unwrap(), sample);
    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r.status, scalelab::record::Status::Ok);
        assert_eq!(r.vocab_size as usize, bpe.vocab_size());
        // Embedding (tied head) counted in the total N.
        assert_eq!(
            r.n_params_total - r.n_params,
            r.vocab_size * r.d_model + r.context * r.d_model
        );
        // A BPE token covers several bytes: bits/byte < bits/token.
        let ratio = r.eval_bits_per_token / r.eval_bits_per_byte;
        assert!(ratio > 1.5 && ratio < 8.0, "bytes per token {ratio}");
    }
    let small = runs.iter().find(|r| r.tokens < 20_000).unwrap();
    let big = runs.iter().find(|r| r.tokens > 20_000).unwrap();
    assert_eq!((small.unique_tokens, small.epochs), (small.tokens, 1.0));
    assert_eq!(big.unique_tokens, 20_000);
    assert!((big.epochs - big.tokens as f64 / 20_000.0).abs() < 1e-9 && big.epochs > 1.9);
    // n-gram baselines: every (order, D), finite, bigram beats unigram.
    let base = scalelab::store::read_baselines(&out).unwrap();
    assert_eq!(base.len(), 3 * 2, "{base:?}");
    let at = |n: usize, d: u64| {
        base.iter()
            .find(|b| b.order == n && b.train_tokens == d)
            .unwrap()
            .eval_loss
    };
    // Sizes are the runs' D capped at the unique tokens (repeated copies would only distort
    // the counts): the small run's D, and 20k.
    let mut sizes: Vec<u64> = base.iter().map(|b| b.train_tokens).collect();
    sizes.sort();
    sizes.dedup();
    assert_eq!(sizes, vec![small.tokens as u64, 20_000]);
    assert!(
        at(2, 20_000) < at(1, 20_000) - 0.1,
        "bigram {} unigram {}",
        at(2, 20_000),
        at(1, 20_000)
    );
    assert!(
        at(3, 20_000) < at(3, sizes[0]),
        "more data helps the trigram"
    );
    assert!(base
        .iter()
        .all(|b| b.eval_loss.is_finite() && b.eval_loss < (bpe.vocab_size() as f64).ln()));
    // The report draws them and lists them.
    let o = scalelab(&[
        "report",
        out.to_str().unwrap(),
        "--bootstrap",
        "0",
        "--holdout",
        "none",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("n-gram baselines") && md.contains("bits/byte"),
        "{md}"
    );
    check_pngs(&out, &["loss_vs_d"]);

    // Corpus errors: empty, smaller than one context, eval split too small.
    std::fs::write(dir.join("empty.txt"), "  \n\n").unwrap();
    std::fs::write(dir.join("tiny.txt"), "to be or not\n").unwrap();
    for (corpus, needles) in [
        ("  text: empty.txt\n", &["empty.txt", "empty"][..]),
        ("  text: tiny.txt\n", &["too few", "model.context"][..]),
        (
            "  text: corpus\n  tokenizer: bpe\n  eval_fraction: 0.001\n  eval_tokens: 4096\n",
            &["eval_fraction", "too few"][..],
        ),
        (
            "  text: nosuch/*.txt\n",
            &["corpus.text", "no file matches"][..],
        ),
        (
            "  builtin: {seed: 1, topics: 2}\n  tokenizer: bpe\n",
            &["corpus.tokenizer"][..],
        ),
    ] {
        let p = dir.join("e.yaml");
        std::fs::write(
            &p,
            BASE.replace("name: t\n", &format!("name: t\ncorpus:\n{corpus}")),
        )
        .unwrap();
        assert_user_error(&run_in(&dir, &["run", "e.yaml", "--out", "eout"]), needles);
    }
}
