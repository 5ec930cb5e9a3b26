// Cooperative-matrix (tensor-core) matmul: out[z] = a[z] · b[z] (+ bias), all row-major, f16
// storage, f16 × f16 → f32 products on FS×FS×FS fragments (FS = 16, or 8 where the adapter has
// only those; the preamble declares FS and the fragment types FA, FB, FC).
//   a [batch, M, K], b [batch, K, N] (batch stride 0 for a shared weight), out [batch, M, N],
//   bias [N]. Needs K % 4 == 0 and N % 4 == 0 (whole vec4<f16> loads and stores); any M, N, K
//   otherwise: edge tiles load zeros into workgroup memory and store through a guarded staging copy.
// Specialised by HAS_BIAS, HAS_RES (add res[(row / res_rep)·N + col], ops/residual.rs), GEGLU
// (store x·gelu(g) per column pair, `Store::Geglu` in ops/matmul), GROUP_M (see ops/matmul),
// NSG, PREFETCH (see coop_gemm.wgsl) and SG, the adapter's fixed subgroup width; coop_tiles_s1.wgsl
// or coop_tiles_s4.wgsl declares the staged tiles, and a file before this one how a is taken
// (matmul_a_plain.wgsl, or matmul_a_ln.wgsl / matmul_a_gn.wgsl for a LayerNorm / GroupNorm
// applied as it loads).
//
// The multiplies are the cooperative GEMM core's (coop_gemm.wgsl, shared with the convolution);
// this file is the matmul's side of it: which tile a workgroup owns, its global loads and the
// epilogue. The tile is four blocks wide (SGN = 4): BN = 16·FS from the host, BM = (NSG/4)·4·FS
// (128 × 256 with 8 subgroups at FS = 16; 4 subgroups, for grids too small to fill a GPU, take
// half the rows). The host checks that the loads below divide evenly among the invocations.

// Per-subgroup staging area: two FS×FS f32 accumulators side by side (FS rows of 2·FS).
const STAGE: u32 = 2u * FS * FS;
// Global → register loads: an A tile row is BK / 4 vec4 and a B tile row BN / 4, so NI
// invocations cover A_STEP rows of A and B_STEP rows of B per round, in A_LOADS and B_LOADS rounds.
const A_STEP: u32 = NI / (BK / 4u);
const B_STEP: u32 = NI / (BN / 4u);
const A_LOADS: u32 = BM / A_STEP;
const B_LOADS: u32 = BK / B_STEP;
// The epilogue copies NSG staged FS × 2·FS slices (FS·FS / 2 vec4 each) in FLUSH_ROUNDS rounds.
const SLICE4: u32 = FS * FS / 2u;
const FLUSH_ROUNDS: u32 = NSG * SLICE4 / NI;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,
    tiles_n: u32,
    a_bs: u32,   // batch strides in elements
    b_bs: u32,
    o_bs: u32,
    batch: u32,
    res_rep: u32,
    seg_px: u32, // rows per GroupNorm segment of a (matmul_a_gn.wgsl); else unused
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<T>>;
// Without a bias the dispatch binds b here again (every binding must be used).
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<T>>;
// Without a residual the dispatch binds a here again.
@group(0) @binding(5) var<storage, read> res: array<vec4<T>>;

var<workgroup> stage: array<f32, NSG * STAGE>;

fn tile_of(w: u32) -> vec2<u32> {
    let per_group = GROUP_M * p.tiles_n;
    let first_m = (w / per_group) * GROUP_M;
    let size_m = min(p.tiles_m - first_m, GROUP_M);
    let r = w % per_group;
    return vec2<u32>(first_m + r % size_m, r / size_m);
}

// One FS × 2·FS slice (accumulator row i, accumulator column pair jp) of every subgroup's block
// has been stored to `stage`; all NI invocations copy the NSG slices out with bias and bounds checks.
fn flush(i: u32, jp: u32, m0: u32, n0: u32, o_off4: u32, lid: u32, live: bool) {
    workgroupBarrier();
    for (var q = 0u; q < FLUSH_ROUNDS; q++) {
        let idx = lid + NI * q;
        let s = idx / SLICE4;            // stage slot = subgroup id
        let e = idx % SLICE4;
        let r = e / (FS / 2u);
        let c4 = e % (FS / 2u);
        let row = m0 + (s / SGN) * SB + i * FS + r;
        let col = n0 + (s % SGN) * SB + jp * (2u * FS) + c4 * 4u;
        if (GEGLU) {
            // Two column groups (x_j, x_j+1, g_j, g_j+1), (x_j+2, .., g_j+3), j = col / 2, make
            // one output vec4: the even slots store, the odd ones only lent their values.
            // N % 8 == 0, one shared weight (batch 1).
            if (live && row < p.m && col < p.n && c4 % 2u == 0u) {
                let sv = s * STAGE + r * (2u * FS) + c4 * 4u;
                var u0 = vec4<f32>(stage[sv], stage[sv + 1u], stage[sv + 2u], stage[sv + 3u]);
                var u1 = vec4<f32>(stage[sv + 4u], stage[sv + 5u], stage[sv + 6u], stage[sv + 7u]);
                if (HAS_BIAS) {
                    u0 += vec4<f32>(f32(bias[col]), f32(bias[col + 1u]), f32(bias[col + 2u]), f32(bias[col + 3u]));
                    u1 += vec4<f32>(f32(bias[col + 4u]), f32(bias[col + 5u]), f32(bias[col + 6u]), f32(bias[col + 7u]));
                }
                let g = vec4<f32>(u0.x * gelu_f32(u0.z), u0.y * gelu_f32(u0.w), u1.x * gelu_f32(u1.z), u1.y * gelu_f32(u1.w));
                out[(row * (p.n / 2u) + col / 2u) / 4u] = vec4<T>(g);
            }
            continue;
        }
        if (live && row < p.m && col < p.n) {
            let sv = s * STAGE + r * (2u * FS) + c4 * 4u;
            var v = vec4<f32>(stage[sv], stage[sv + 1u], stage[sv + 2u], stage[sv + 3u]);
            if (HAS_BIAS) {
                v += vec4<f32>(f32(bias[col]), f32(bias[col + 1u]), f32(bias[col + 2u]), f32(bias[col + 3u]));
            }
            let o4 = o_off4 + (row * p.n + col) / 4u;
            if (HAS_RES) {
                // The output's flat row (batch included) is o4·4 / N; N % 4 == 0.
                v += vec4<f32>(res[(((o4 * 4u) / p.n) / p.res_rep) * (p.n / 4u) + col / 4u]);
            }
            out[o4] = vec4<T>(v);
        }
    }
    workgroupBarrier();
}

// This invocation's share of k-step kt's a and b tiles (zeros past the edges), in registers
// until stage_tiles: BK / 4 invocations per a tile row, BN / 4 per b tile row.
var<private> ra: array<AT, A_LOADS>;
var<private> rb: array<vec4<f16>, B_LOADS>;
// What ln_four needs of each of this invocation's a rows (the same rows at every k-step).
var<private> rt: array<vec4<f32>, A_LOADS>;

// The workgroup's tile: its first row and column, the batch entry's offsets (vec4 units), and
// whether it stores (workgroups past the end compute a copy of the last tile and store nothing).
struct Tile {
    m0: u32,
    n0: u32,
    a_off4: u32,
    b_off4: u32,
    o_off4: u32,
    live: bool,
}

fn tile_begin(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Tile {
    let per_batch = p.tiles_m * p.tiles_n;
    let total = per_batch * p.batch;
    let w_raw = wg_index(wid, nwg);
    let w = min(w_raw, total - 1u);
    let z = w / per_batch;
    let mn = tile_of(w % per_batch);
    let t = Tile(mn.x * BM, mn.y * BN, z * (p.a_bs / 4u), z * (p.b_bs / 4u), z * (p.o_bs / 4u), w_raw < total);
    for (var i = 0u; i < A_LOADS; i++) {
        rt[i] = ln_row(t.m0 + lid / (BK / 4u) + A_STEP * i);
    }
    return t;
}

fn k_range(t: Tile) -> vec2<u32> {
    return vec2<u32>(0u, (p.k + BK - 1u) / BK);
}

fn fetch(t: Tile, kt: u32, lid: u32) {
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let a_last = arrayLength(&a) - 1u;
    let b_last = arrayLength(&b) - 1u;
    let zero = vec4<f16>(0.0h);
    let c_a = kt * (BK / 4u) + lid % (BK / 4u);
    for (var i = 0u; i < A_LOADS; i++) {
        let row = t.m0 + lid / (BK / 4u) + A_STEP * i;
        ra[i] = select(AT(0.0), AT(a[min(t.a_off4 + row * k4 + c_a, a_last)]), row < p.m && c_a < k4);
    }
    let c_b = t.n0 / 4u + lid % (BN / 4u);
    for (var i = 0u; i < B_LOADS; i++) {
        let kr = kt * BK + lid / (BN / 4u) + B_STEP * i;
        rb[i] = select(zero, vec4<f16>(b[min(t.b_off4 + kr * n4 + c_b, b_last)]), kr < p.k && c_b < n4);
    }
}

// Writes k-step kt's fetched registers into the staged tiles (a's through ln_four; its zero
// padding stays zero).
fn stage_tiles(t: Tile, kt: u32, lid: u32) {
    let c_a = kt * (BK / 4u) + lid % (BK / 4u);
    for (var i = 0u; i < A_LOADS; i++) {
        let r = lid / (BK / 4u) + A_STEP * i;
        let live = t.m0 + r < p.m && c_a < p.k / 4u;
        put_a(r * AS + (lid % (BK / 4u)) * 4u, vec4<f16>(select(AT(0.0), ln_four(ra[i], rt[i], 4u * c_a), live)));
    }
    for (var i = 0u; i < B_LOADS; i++) {
        put_b((lid / (BN / 4u) + B_STEP * i) * BS + (lid % (BN / 4u)) * 4u, rb[i]);
    }
}

// The epilogue: the pair through this subgroup's staging area, then every subgroup's slice out
// (the store stride must be a constant: naga 30.0.2's SPIR-V writer panics on a run-time
// coopStoreT stride).
fn store_pair(t: Tile, ca: FC, cb: FC, i: u32, jp: u32, sg: u32, lane: u32, lid: u32) {
    let sb = sg * STAGE;
    coopStoreT(ca, &stage[sb], 2u * FS);
    coopStoreT(cb, &stage[sb + FS], 2u * FS);
    flush(i, jp, t.m0, t.n0, t.o_off4, lid, t.live);
}
