//! CPU twins of the Winograd transforms (f64 arithmetic), in the GPU kernels' layouts: planes
//! ξ = 4·i + j of `[N, TH, TW, C]`, TH = ⌈H/2⌉, TW = ⌈W/2⌉.

/// Tiles per column and row of an `h` × `w` image.
pub fn tiles(h: usize, w: usize) -> (usize, usize) {
    (h.div_ceil(2), w.div_ceil(2))
}

/// `G g Gᵀ` of every 3×3 kernel of a PyTorch weight `[Cout, Cin, KT, 3, 3]` (KT = 1 for
/// `[Cout, Cin, 3, 3]`): 16 planes of `[Cout, Cin, KT]`, with
/// `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`. The twin of `shaders/winograd_weight.wgsl` (which
/// writes the planes in the products' layouts).
pub fn transform_weight(w: &[f32], cout: usize, cin: usize, kt: usize) -> Vec<f32> {
    let len = cout * cin * kt;
    let mut u = vec![0f32; 16 * len];
    for k in 0..len {
        let g: [f64; 9] = std::array::from_fn(|e| w[9 * k + e] as f64);
        // G g: 4 rows of 3 (rows of g combined).
        let mut gg = [[0f64; 3]; 4];
        for c in 0..3 {
            let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
            gg[0][c] = a;
            gg[1][c] = 0.5 * (a + b + d);
            gg[2][c] = 0.5 * (a - b + d);
            gg[3][c] = d;
        }
        // (G g) Gᵀ: each row's three values to four.
        for (i, r) in gg.iter().enumerate() {
            let row = [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
            for (j, v) in row.iter().enumerate() {
                u[(4 * i + j) * len + k] = *v as f32;
            }
        }
    }
    u
}

/// `Bᵀ d B` of every 4×4 input patch (rows and columns from 2·t − 1, zero outside): x
/// `[N, H, W, C]` → 16 planes of `[N, TH, TW, C]`, with `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`.
pub fn input_transform(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    const BT: [[f64; 4]; 4] = [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]];
    let (th, tw) = tiles(h, w);
    let plane = n * th * tw * c;
    let mut v = vec![0f32; 16 * plane];
    let at = |b: usize, y: isize, xx: isize, ch: usize| -> f64 {
        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
            0.0
        } else {
            x[((b * h + y as usize) * w + xx as usize) * c + ch] as f64
        }
    };
    for b in 0..n {
        for ty in 0..th {
            for tx in 0..tw {
                for ch in 0..c {
                    let d: Vec<Vec<f64>> = (0..4).map(|r| (0..4).map(|s| at(b, 2 * ty as isize - 1 + r, 2 * tx as isize - 1 + s, ch)).collect()).collect();
                    for i in 0..4 {
                        for j in 0..4 {
                            let mut s = 0.0;
                            for (r, dr) in d.iter().enumerate() {
                                for (q, v) in dr.iter().enumerate() {
                                    s += BT[i][r] * v * BT[j][q];
                                }
                            }
                            v[(4 * i + j) * plane + ((b * th + ty) * tw + tx) * c + ch] = s as f32;
                        }
                    }
                }
            }
        }
    }
    v
}

/// `Aᵀ m A` of every tile's 16 products, plus the bias and a residual `[N, H, W, C]`: 16 planes
/// of `[N, TH, TW, C]` → `[N, H, W, C]`, with `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
pub fn output_transform(m: &[f32], n: usize, h: usize, w: usize, c: usize, bias: Option<&[f32]>, res: Option<&[f32]>) -> Vec<f32> {
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
    let (th, tw) = tiles(h, w);
    let plane = n * th * tw * c;
    let mut y = vec![0f32; n * h * w * c];
    for b in 0..n {
        for ty in 0..th {
            for tx in 0..tw {
                for ch in 0..c {
                    let t = ((b * th + ty) * tw + tx) * c + ch;
                    for (a, ra) in AT.iter().enumerate() {
                        for (e, re) in AT.iter().enumerate() {
                            let (yy, xx) = (2 * ty + a, 2 * tx + e);
                            if yy >= h || xx >= w {
                                continue;
                            }
                            let mut s = 0.0;
                            for (i, ai) in ra.iter().enumerate() {
                                for (j, ej) in re.iter().enumerate() {
                                    s += ai * m[(4 * i + j) * plane + t] as f64 * ej;
                                }
                            }
                            let o = ((b * h + yy) * w + xx) * c + ch;
                            s += bias.map_or(0.0, |v| v[ch] as f64) + res.map_or(0.0, |r| r[o] as f64);
                            y[o] = s as f32;
                        }
                    }
                }
            }
        }
    }
    y
}
