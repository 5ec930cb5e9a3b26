//! CPU references in PyTorch weight layout (f64 accumulation), channels-last activations.

/// `nn.Conv2d` with weight `[Cout, Cin, kh, kw]`: x `[N, H, W, Cin]` → `[N, Ho, Wo, Cout]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(x: &[f32], n: usize, h: usize, w: usize, cin: usize, wt: &[f32], cout: usize, kh: usize, kw: usize, bias: Option<&[f32]>, stride: usize, pad: usize) -> Vec<f32> {
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (w + 2 * pad - kw) / stride + 1;
    let mut out = vec![0f32; n * ho * wo * cout];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..cout {
                    let mut s = bias.map_or(0.0, |b| b[co] as f64);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let xo = ((b * h + iy as usize) * w + ix as usize) * cin;
                            for ci in 0..cin {
                                s += x[xo + ci] as f64 * wt[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    out[((b * ho + oy) * wo + ox) * cout + co] = s as f32;
                }
            }
        }
    }
    out
}

/// `nn.ConvTranspose2d(k 4, s 2, p 1)` with weight `[Cin, Cout, 4, 4]`, written as PyTorch
/// defines it (a scatter: input pixel i adds to outputs 2i − 1 + k).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(x: &[f32], n: usize, h: usize, w: usize, cin: usize, wt: &[f32], cout: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let (ho, wo) = (2 * h, 2 * w);
    let mut acc = vec![0f64; n * ho * wo * cout];
    for b in 0..n {
        for iy in 0..h {
            for ix in 0..w {
                for ky in 0..4 {
                    for kx in 0..4 {
                        let oy = (2 * iy + ky) as isize - 1;
                        let ox = (2 * ix + kx) as isize - 1;
                        if oy < 0 || ox < 0 || oy >= ho as isize || ox >= wo as isize {
                            continue;
                        }
                        let oo = ((b * ho + oy as usize) * wo + ox as usize) * cout;
                        for ci in 0..cin {
                            let xv = x[((b * h + iy) * w + ix) * cin + ci] as f64;
                            for co in 0..cout {
                                acc[oo + co] += xv * wt[((ci * cout + co) * 4 + ky) * 4 + kx] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    acc.chunks(cout).flat_map(|px| px.iter().enumerate().map(|(co, &v)| (v + bias.map_or(0.0, |b| b[co] as f64)) as f32)).collect()
}

/// `nn.Conv3d(padding = (kt/2, kh/2, kw/2))` with weight `[Cout, Cin, kt, kh, kw]`:
/// x `[B, F, H, W, Cin]` → `[B, F, H, W, Cout]`.
#[allow(clippy::too_many_arguments)]
pub fn conv3d(x: &[f32], b: usize, f: usize, h: usize, w: usize, cin: usize, wt: &[f32], cout: usize, k: [usize; 3], bias: Option<&[f32]>) -> Vec<f32> {
    let [kt, kh, kw] = k;
    let (pt, ph, pw) = ((kt / 2) as isize, (kh / 2) as isize, (kw / 2) as isize);
    let mut out = vec![0f32; b * f * h * w * cout];
    for bi in 0..b {
        for z in 0..f {
            for y in 0..h {
                for xx in 0..w {
                    for co in 0..cout {
                        let mut s = bias.map_or(0.0, |b| b[co] as f64);
                        for dt in 0..kt {
                            for dy in 0..kh {
                                for dx in 0..kw {
                                    let iz = z as isize + dt as isize - pt;
                                    let iy = y as isize + dy as isize - ph;
                                    let ix = xx as isize + dx as isize - pw;
                                    if iz < 0 || iy < 0 || ix < 0 || iz >= f as isize || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xo = (((bi * f + iz as usize) * h + iy as usize) * w + ix as usize) * cin;
                                    for ci in 0..cin {
                                        s += x[xo + ci] as f64 * wt[(((co * cin + ci) * kt + dt) * kh + dy) * kw + dx] as f64;
                                    }
                                }
                            }
                        }
                        out[(((bi * f + z) * h + y) * w + xx) * cout + co] = s as f32;
                    }
                }
            }
        }
    }
    out
}
