//! Host-side packing of PyTorch weights into the kernels' layouts: every layout the loaders
//! build is rows of gathers at a stride (a transpose, possibly of a sub-kernel), so one routine,
//! parallel over rows and blocked over columns, does them all. Loading a full-size model was
//! mostly these loops run one element at a time on one core.

/// Fills `out`, rows of `row_len`, with `out[r][c] = src[base + c · stride]` for `c < cols`
/// where `row(r)` gives `Some((base, stride))`; rows given `None` and columns past `cols` are left
/// as they are (the callers' zero padding).
pub fn gather_rows(out: &mut [f32], row_len: usize, cols: usize, src: &[f32], row: impl Fn(usize) -> Option<(usize, usize)> + Sync) {
    assert!(row_len > 0 && cols <= row_len && out.len().is_multiple_of(row_len));
    let rows = out.len() / row_len;
    // Columns in blocks: the strided reads of one block touch BLOCK cache lines, which the next
    // rows (nearby bases) hit again.
    const BLOCK: usize = 16;
    let fill = |first: usize, part: &mut [f32]| {
        let n = part.len() / row_len;
        for c0 in (0..cols).step_by(BLOCK) {
            let c1 = (c0 + BLOCK).min(cols);
            for i in 0..n {
                if let Some((base, stride)) = row(first + i) {
                    let dst = &mut part[i * row_len..];
                    for c in c0..c1 {
                        dst[c] = src[base + c * stride];
                    }
                }
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(8);
    if threads == 1 || out.len() < 1 << 16 {
        fill(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(per * row_len).enumerate() {
            let fill = &fill;
            s.spawn(move || fill(t * per, part));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::gather_rows;

    /// Against the plain loop, at sizes on both sides of the parallel threshold, with padding
    /// rows and columns left untouched.
    #[test]
    fn gathers_match_the_plain_loop() {
        for (rows, cols, row_len) in [(1usize, 1usize, 1usize), (7, 33, 40), (77, 5, 8), (600, 130, 136), (1031, 77, 80)] {
            let stride = rows + 3;
            let src: Vec<f32> = (0..stride * cols + rows).map(|i| i as f32 * 0.5 - 7.0).collect();
            let row = |r: usize| if r % 5 == 4 { None } else { Some((r, stride)) };
            let mut got = vec![-1.0f32; rows * row_len];
            gather_rows(&mut got, row_len, cols, &src, row);
            for r in 0..rows {
                for c in 0..row_len {
                    let want = match row(r) {
                        Some((b, s)) if c < cols => src[b + c * s],
                        _ => -1.0,
                    };
                    assert_eq!(got[r * row_len + c], want, "rows {rows} cols {cols}: [{r}][{c}]");
                }
            }
        }
    }
}
