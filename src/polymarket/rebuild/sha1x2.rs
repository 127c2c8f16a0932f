//! SHA-1 for the hashing stage: a computation that can be kept part way (the state after a state's
//! hash text up to `"last_trade_price":`, from which each trade price tried costs a block or two),
//! and two texts hashed at once. SHA-1 is most of pm-rebuild's work on large books; on x86-64 with
//! the SHA extensions two independent texts are compressed with their rounds interleaved, which
//! keeps the SHA unit busier than one text's chain of dependent rounds: 1.14x the throughput of one
//! at a time on this project's machine (measured, docs/WEBSOCKET.md "Throughput"). Elsewhere, and
//! for what is left over, the `sha1` crate's compression function does the work. Same digests
//! either way (tests below compare with the `sha1` crate on every length around the block size).

use sha1::block_api::compress;

const H0: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];

/// A SHA-1 computation under way: the state after the whole blocks so far, the bytes of the block
/// begun, the length.
#[derive(Clone)]
pub(super) struct Mid {
    h: [u32; 5],
    buf: [u8; 64],
    n: usize,
    len: u64,
}

impl Default for Mid {
    fn default() -> Mid {
        Mid { h: H0, buf: [0; 64], n: 0, len: 0 }
    }
}

impl Mid {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.n > 0 {
            let k = (64 - self.n).min(data.len());
            self.buf[self.n..self.n + k].copy_from_slice(&data[..k]);
            self.n += k;
            data = &data[k..];
            if self.n < 64 {
                return;
            }
            compress(&mut self.h, std::slice::from_ref(&self.buf));
            self.n = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        compress(&mut self.h, blocks);
        self.keep(rest);
    }

    /// Keeps the bytes of a block begun (after whole blocks: `n` is 0).
    fn keep(&mut self, rest: &[u8]) {
        self.buf[..rest.len()].copy_from_slice(rest);
        self.n = rest.len();
    }

    /// The digest of everything given, then `tail`.
    pub fn digest_with(mut self, tail: &[&[u8]]) -> [u8; 20] {
        tail.iter().for_each(|t| self.update(t));
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let k = if self.n < 56 { 56 - self.n } else { 120 - self.n };
        pad[k..k + 8].copy_from_slice(&bits.to_be_bytes());
        self.update(&pad[..k + 8]);
        debug_assert_eq!(self.n, 0);
        let mut out = [0u8; 20];
        for (o, w) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// `a.update(da)` and `b.update(db)`, the blocks of both compressed together where the CPU allows.
pub(super) fn update2(a: &mut Mid, da: &[u8], b: &mut Mid, db: &[u8]) {
    if a.n != 0 || b.n != 0 || !interleaved::available() {
        a.update(da);
        b.update(db);
        return;
    }
    let ((ba, ra), (bb, rb)) = (da.as_chunks::<64>(), db.as_chunks::<64>());
    let k = ba.len().min(bb.len());
    interleaved::compress2(&mut a.h, &ba[..k], &mut b.h, &bb[..k]);
    compress(&mut a.h, &ba[k..]);
    compress(&mut b.h, &bb[k..]);
    a.keep(ra);
    b.keep(rb);
    a.len += da.len() as u64;
    b.len += db.len() as u64;
}

#[cfg(target_arch = "x86_64")]
mod interleaved {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// Both states over the same number of blocks. Call only when [`available`].
    pub fn compress2(sa: &mut [u32; 5], ba: &[[u8; 64]], sb: &mut [u32; 5], bb: &[[u8; 64]]) {
        assert_eq!(ba.len(), bb.len());
        assert!(available());
        // SAFETY: the CPU has the target features (checked above); the function reads only the
        // blocks and writes only the two states, through references.
        unsafe { rounds(sa, ba, sb, bb) }
    }

    /// Four rounds of one text (the SHA-NI sequence of the `sha1` crate's x86 backend).
    macro_rules! rounds4 {
        ($h0:ident, $h1:ident, $wk:expr, $i:expr) => {
            _mm_sha1rnds4_epu32($h0, _mm_sha1nexte_epu32($h1, $wk), $i)
        };
    }

    macro_rules! schedule {
        ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
            _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($v0, $v1), $v2), $v3)
        };
    }

    /// The next message words of one text, and its four rounds with them.
    macro_rules! sr4 {
        ($h0:ident, $h1:ident, $w0:expr, $w1:expr, $w2:expr, $w3:expr, $w4:expr, $i:expr) => {
            $w4 = schedule!($w0, $w1, $w2, $w3);
            $h1 = rounds4!($h0, $h1, $w4, $i);
        };
    }

    /// Loads the 16 message words of a block (big-endian), as four vectors.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn words(block: &[u8; 64]) -> [__m128i; 4] {
        let mask = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0A0B_0C0D_0E0F);
        let p: *const __m128i = block.as_ptr().cast();
        // SAFETY: four unaligned 16-byte loads inside the 64-byte block.
        unsafe { [0, 1, 2, 3].map(|i| _mm_shuffle_epi8(_mm_loadu_si128(p.add(i)), mask)) }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(s: &[u32; 5]) -> (__m128i, __m128i) {
        // SAFETY: an unaligned 16-byte load of the first four words.
        let abcd = unsafe { _mm_loadu_si128(s.as_ptr().cast()) };
        (_mm_shuffle_epi32(abcd, 0b00011011), _mm_set_epi32(s[4] as i32, 0, 0, 0))
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store(s: &mut [u32; 5], abcd: __m128i, e: __m128i) {
        // SAFETY: an unaligned 16-byte store into the first four words.
        unsafe { _mm_storeu_si128(s.as_mut_ptr().cast(), _mm_shuffle_epi32(abcd, 0b00011011)) };
        s[4] = _mm_extract_epi32(e, 3) as u32;
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds(sa: &mut [u32; 5], ba: &[[u8; 64]], sb: &mut [u32; 5], bb: &[[u8; 64]]) {
        let (mut abcd, mut e) = load(sa);
        let (mut abcd_, mut e_) = load(sb);
        for (block, block_) in ba.iter().zip(bb) {
            let [mut w0, mut w1, mut w2, mut w3] = words(block);
            let [mut v0, mut v1, mut v2, mut v3] = words(block_);
            let (mut w4, mut v4);
            let (mut h0, mut h1) = (abcd, _mm_add_epi32(e, w0));
            let (mut g0, mut g1) = (abcd_, _mm_add_epi32(e_, v0));
            h1 = _mm_sha1rnds4_epu32(h0, h1, 0);
            g1 = _mm_sha1rnds4_epu32(g0, g1, 0);
            h0 = rounds4!(h1, h0, w1, 0);
            g0 = rounds4!(g1, g0, v1, 0);
            h1 = rounds4!(h0, h1, w2, 0);
            g1 = rounds4!(g0, g1, v2, 0);
            h0 = rounds4!(h1, h0, w3, 0);
            g0 = rounds4!(g1, g0, v3, 0);
            sr4!(h0, h1, w0, w1, w2, w3, w4, 0);
            sr4!(g0, g1, v0, v1, v2, v3, v4, 0);
            sr4!(h1, h0, w1, w2, w3, w4, w0, 1);
            sr4!(g1, g0, v1, v2, v3, v4, v0, 1);
            sr4!(h0, h1, w2, w3, w4, w0, w1, 1);
            sr4!(g0, g1, v2, v3, v4, v0, v1, 1);
            sr4!(h1, h0, w3, w4, w0, w1, w2, 1);
            sr4!(g1, g0, v3, v4, v0, v1, v2, 1);
            sr4!(h0, h1, w4, w0, w1, w2, w3, 1);
            sr4!(g0, g1, v4, v0, v1, v2, v3, 1);
            sr4!(h1, h0, w0, w1, w2, w3, w4, 1);
            sr4!(g1, g0, v0, v1, v2, v3, v4, 1);
            sr4!(h0, h1, w1, w2, w3, w4, w0, 2);
            sr4!(g0, g1, v1, v2, v3, v4, v0, 2);
            sr4!(h1, h0, w2, w3, w4, w0, w1, 2);
            sr4!(g1, g0, v2, v3, v4, v0, v1, 2);
            sr4!(h0, h1, w3, w4, w0, w1, w2, 2);
            sr4!(g0, g1, v3, v4, v0, v1, v2, 2);
            sr4!(h1, h0, w4, w0, w1, w2, w3, 2);
            sr4!(g1, g0, v4, v0, v1, v2, v3, 2);
            sr4!(h0, h1, w0, w1, w2, w3, w4, 2);
            sr4!(g0, g1, v0, v1, v2, v3, v4, 2);
            sr4!(h1, h0, w1, w2, w3, w4, w0, 3);
            sr4!(g1, g0, v1, v2, v3, v4, v0, 3);
            sr4!(h0, h1, w2, w3, w4, w0, w1, 3);
            sr4!(g0, g1, v2, v3, v4, v0, v1, 3);
            sr4!(h1, h0, w3, w4, w0, w1, w2, 3);
            sr4!(g1, g0, v3, v4, v0, v1, v2, 3);
            sr4!(h0, h1, w4, w0, w1, w2, w3, 3);
            sr4!(g0, g1, v4, v0, v1, v2, v3, 3);
            sr4!(h1, h0, w0, w1, w2, w3, w4, 3);
            sr4!(g1, g0, v0, v1, v2, v3, v4, 3);
            abcd = _mm_add_epi32(abcd, h0);
            e = _mm_sha1nexte_epu32(h1, e);
            abcd_ = _mm_add_epi32(abcd_, g0);
            e_ = _mm_sha1nexte_epu32(g1, e_);
        }
        store(sa, abcd, e);
        store(sb, abcd_, e_);
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod interleaved {
    pub fn available() -> bool {
        false
    }

    pub fn compress2(_: &mut [u32; 5], _: &[[u8; 64]], _: &mut [u32; 5], _: &[[u8; 64]]) {
        unreachable!("not available")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    fn text(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn the_same_digests_as_the_sha1_crate_at_every_length_around_the_blocks() {
        for n in (0..300).chain([1000, 3333, 4096]) {
            let t = text(n, 7);
            let want: [u8; 20] = Sha1::digest(&t).into();
            assert_eq!(Mid::default().digest_with(&[&t]), want, "one text of {n}");
            // Split anywhere, kept part way, finished with a tail.
            let cut = n / 3;
            let mut m = Mid::default();
            m.update(&t[..cut]);
            assert_eq!(m.clone().digest_with(&[&t[cut..]]), want, "{n} cut at {cut}");
            // Two texts at once (interleaved where the CPU has the SHA extensions), any lengths.
            let u = text(n * 7 % 500, 3);
            let (mut a, mut b) = (Mid::default(), Mid::default());
            update2(&mut a, &t, &mut b, &u);
            assert_eq!(a.digest_with(&[]), want, "{n} as the first of two");
            assert_eq!(b.digest_with(&[b"}"]), <[u8; 20]>::from(Sha1::digest([&u[..], b"}"].concat())));
        }
    }

    #[test]
    fn two_at_once_from_a_kept_start() {
        // The stage hashes each text from the state after its asset's first two blocks.
        let (t, u) = (text(3000, 1), text(2900, 2));
        let mut start = Mid::default();
        start.update(&t[..128]);
        let (mut a, mut b) = (start.clone(), start.clone());
        update2(&mut a, &t[128..], &mut b, &u[128..]);
        let mut uu = t[..128].to_vec();
        uu.extend_from_slice(&u[128..]);
        assert_eq!(a.digest_with(&[]), <[u8; 20]>::from(Sha1::digest(&t)));
        assert_eq!(b.digest_with(&[]), <[u8; 20]>::from(Sha1::digest(&uu)));
    }
}
