//! Tokenizers for text corpora: byte-level (vocab 256) and byte-level BPE trained with
//! Hugging Face `tokenizers` on the training split only.
//!
//! Owns training the BPE model (GPT-2-style byte-level pre-tokenization, no prefix space, so
//! decoding gives back the exact text), encoding text to u16 ids, the byte length of every
//! token (for bits per byte), and the tokenizer's JSON form (saved as `tokenizer.json`).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    TokenizerBuilder, TokenizerImpl,
};

type Tk = TokenizerImpl<
    BPE,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A trained byte-level BPE tokenizer.
pub struct Bpe {
    tk: Tk,
}

fn byte_level() -> ByteLevel {
    // No prefix space: encode/decode round-trips the text exactly.
    ByteLevel::new(false, true, true)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("tokenizer: {e}")
}

/// Text cut into pieces of about 4 KB at line ends (units for training and parallel encoding).
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + 4096).min(text.len());
        while end < text.len() && !text.is_char_boundary(end) {
            end += 1;
        }
        if let Some(nl) = text[end..].find('\n') {
            end += nl + 1;
        } else {
            end = text.len();
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

impl Bpe {
    /// Train on `text` (the training split) to at most `vocab_size` tokens.
    pub fn train(text: &str, vocab_size: usize) -> anyhow::Result<Bpe> {
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk: Tk = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level())))
            .with_post_processor(None)
            .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())))
            .build()
            .map_err(err)?;
        tk.train(&mut trainer, pieces(text).into_iter())
            .map_err(err)?;
        Ok(Bpe { tk })
    }

    /// Load from the JSON written by [`Bpe::to_json`].
    pub fn from_json(json: &str) -> anyhow::Result<Bpe> {
        let tk: Tk = serde_json::from_str(json).map_err(err)?;
        Ok(Bpe { tk })
    }

    /// The `tokenizer.json` form (loads in Python with `tokenizers.Tokenizer.from_str`).
    pub fn to_json(&self) -> anyhow::Result<String> {
        self.tk.to_string(true).map_err(err)
    }

    pub fn vocab_size(&self) -> usize {
        self.tk.get_model().get_vocab_size()
    }

    /// Token ids of `text` (pieces encoded in parallel; merges never cross a line end).
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u16>> {
        use rayon::prelude::*;
        let parts: Vec<anyhow::Result<Vec<u16>>> = pieces(text)
            .par_iter()
            .map(|p| {
                let enc = self.tk.encode(*p, false).map_err(err)?;
                Ok(enc.get_ids().iter().map(|&i| i as u16).collect())
            })
            .collect();
        let mut out = Vec::with_capacity(text.len() / 3);
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    /// The text of token ids.
    pub fn decode(&self, ids: &[u16]) -> anyhow::Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tk.decode(&ids, false).map_err(err)
    }

    /// Bytes of text each token id stands for (byte-level BPE: one byte per symbol).
    pub fn byte_lengths(&self) -> Vec<u32> {
        let model = self.tk.get_model();
        (0..self.vocab_size() as u32)
            .map(|id| {
                model
                    .id_to_token(id)
                    .map_or(1, |t| t.chars().count() as u32)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpe_round_trips_text_and_compresses() {
        let text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\
                    The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n"
            .repeat(20)
            + "Ünïcödé — “quotes” ✓\n";
        let bpe = Bpe::train(&text, 400).unwrap();
        assert!(bpe.vocab_size() > 256 && bpe.vocab_size() <= 400);
        let ids = bpe.encode(&text).unwrap();
        assert_eq!(bpe.decode(&ids).unwrap(), text, "round trip");
        assert!(
            ids.len() * 2 < text.len(),
            "BPE compresses: {} ids for {} bytes",
            ids.len(),
            text.len()
        );
        // Byte lengths add up to the text's length.
        let lens = bpe.byte_lengths();
        let total: u64 = ids.iter().map(|&i| lens[i as usize] as u64).sum();
        assert_eq!(total, text.len() as u64);
        // JSON round trip gives the same tokenizer.
        let again = Bpe::from_json(&bpe.to_json().unwrap()).unwrap();
        assert_eq!(again.encode(&text).unwrap(), ids);
        // Training is deterministic: the same text gives the same tokenizer (array tasks and
        // machines that re-tokenize agree with the run ids, which hash the text, not the ids).
        assert_eq!(
            Bpe::train(&text, 400).unwrap().to_json().unwrap(),
            bpe.to_json().unwrap()
        );
        // Text never seen in training still encodes and decodes.
        let novel = "Zebra quartz jumps 42 ∑ times\n";
        assert_eq!(bpe.decode(&bpe.encode(novel).unwrap()).unwrap(), novel);
    }
}
