//! SHA-1, for checking files outside LFS against the git blob id the hub lists for them
//! (`sha1("blob {len}\0" + contents)`). Only used to detect damaged downloads; the weights
//! themselves (LFS files) are checked with sha256.

pub struct Sha1 {
    h: [u32; 5],
    buf: Vec<u8>,
    len: u64,
}

impl Default for Sha1 {
    fn default() -> Self {
        Sha1 { h: [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476, 0xc3d2_e1f0], buf: Vec::with_capacity(64), len: 0 }
    }
}

impl Sha1 {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if !self.buf.is_empty() {
            let n = (64 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() < 64 {
                return;
            }
            let block: [u8; 64] = self.buf[..].try_into().unwrap();
            compress(&mut self.h, &block);
            self.buf.clear();
        }
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            compress(&mut self.h, b.try_into().unwrap());
        }
        self.buf.extend_from_slice(blocks.remainder());
    }

    pub fn finish(mut self) -> String {
        let bits = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.buf);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        for b in tail.chunks_exact(64) {
            compress(&mut self.h, b.try_into().unwrap());
        }
        self.h.iter().map(|w| format!("{w:08x}")).collect()
    }
}

fn compress(h: &mut [u32; 5], block: &[u8; 64]) {
    let mut w = [0u32; 80];
    for (i, c) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes(c.try_into().unwrap());
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *h;
    for (i, &wi) in w.iter().enumerate() {
        let (f, k) = match i {
            0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
            20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
            _ => (b ^ c ^ d, 0xca62_c1d6),
        };
        let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(wi);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = t;
    }
    for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
        *x = x.wrapping_add(y);
    }
}

/// The git blob id of `data` (what `git hash-object` prints).
#[cfg(test)]
pub fn git_blob_id(data: &[u8]) -> String {
    let mut h = Sha1::default();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let hash = |parts: &[&[u8]]| {
            let mut h = Sha1::default();
            parts.iter().for_each(|p| h.update(p));
            h.finish()
        };
        // FIPS 180 examples, fed whole and in uneven pieces (the buffering path).
        assert_eq!(hash(&[b""]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hash(&[b"abc"]), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let m = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hash(&[m]), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(hash(&[&m[..3], &m[3..40], &m[40..]]), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        let a = vec![b'a'; 1_000_000];
        assert_eq!(hash(&[&a[..1], &a[1..70_001], &a[70_001..]]), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        // What `git hash-object` prints.
        assert_eq!(git_blob_id(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(git_blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }
}
