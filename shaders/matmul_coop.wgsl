// Cooperative-matrix (tensor-core) matmul: out[z] = a[z] · b[z] (+ bias), all row-major, f16
// storage, f16 × f16 → f32 products on FS×FS×FS fragments (FS = 16, or 8 where the adapter has
// only those; the preamble declares FS and the fragment types FA, FB, FC).
//   a [batch, M, K], b [batch, K, N] (batch stride 0 for a shared weight), out [batch, M, N],
//   bias [N]. Needs K % 4 == 0 and N % 4 == 0 (whole vec4<f16> loads and stores); any M, N, K
//   otherwise: edge tiles load zeros into workgroup memory and store through a guarded staging copy.
// Specialised by HAS_BIAS, HAS_RES (add res[(row / res_rep)·N + col], ops/residual.rs), GEGLU
// (store x·gelu(g) per column pair, `Store::Geglu` in ops/matmul.rs), GROUP_M (see ops/matmul.rs)
// and SG, the adapter's fixed subgroup width; a second file (matmul_coop_s1.wgsl or
// matmul_coop_s4.wgsl) declares the workgroup tiles As, Bs, their element width SW and put_a/put_b,
// and a file before this one how a is taken (matmul_a_plain.wgsl, or matmul_a_ln.wgsl /
// matmul_a_gn.wgsl for a LayerNorm / GroupNorm applied as it loads).
//
// NSG subgroups of SG invocations in an (NSG/4)×4 grid, each owning an SB×SB block (SB = 4·FS)
// as 4×4 accumulators: with 8, a BM×BN = 8·FS × 16·FS workgroup tile (128×256 with FS = 16);
// with 4 (grids too small to fill a GPU), half the rows. k-step BK = 2·FS. With PREFETCH the next
// k-step's global loads are in flight during this step's multiplies; without, each step is
// loaded, then staged (fewer live registers).
// The host checks that the loads below divide evenly among the invocations. Every cooperative
// operation is executed by all subgroups the same number of times (uniform control flow); only
// addresses depend on the subgroup id.

const NI: u32 = NSG * SG;
const SB: u32 = 4u * FS;
const BM: u32 = (NSG / 4u) * SB;
const BN: u32 = 4u * SB;
const BK: u32 = 2u * FS;
// Row strides of the workgroup tiles in f16 elements, padded by 8 so that the 16-byte row pieces
// of one fragment load land on different banks.
const AS: u32 = BK + 8u;
const BS: u32 = BN + 8u;
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
        let row = m0 + (s / 4u) * SB + i * FS + r;
        let col = n0 + (s % 4u) * SB + jp * (2u * FS) + c4 * 4u;
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

fn fetch(kt: u32, m0: u32, n0: u32, a_off4: u32, b_off4: u32, lid: u32) {
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let a_last = arrayLength(&a) - 1u;
    let b_last = arrayLength(&b) - 1u;
    let zero = vec4<f16>(0.0h);
    let c_a = kt * (BK / 4u) + lid % (BK / 4u);
    for (var i = 0u; i < A_LOADS; i++) {
        let row = m0 + lid / (BK / 4u) + A_STEP * i;
        ra[i] = select(AT(0.0), AT(a[min(a_off4 + row * k4 + c_a, a_last)]), row < p.m && c_a < k4);
    }
    let c_b = n0 / 4u + lid % (BN / 4u);
    for (var i = 0u; i < B_LOADS; i++) {
        let kr = kt * BK + lid / (BN / 4u) + B_STEP * i;
        rb[i] = select(zero, vec4<f16>(b[min(b_off4 + kr * n4 + c_b, b_last)]), kr < p.k && c_b < n4);
    }
}

// Writes k-step kt's fetched registers into the workgroup tiles (a's through ln_four; its zero
// padding stays zero).
fn stage_tiles(lid: u32, kt: u32, m0: u32) {
    let c_a = kt * (BK / 4u) + lid % (BK / 4u);
    for (var i = 0u; i < A_LOADS; i++) {
        let r = lid / (BK / 4u) + A_STEP * i;
        let live = m0 + r < p.m && c_a < p.k / 4u;
        put_a(r * AS + (lid % (BK / 4u)) * 4u, vec4<f16>(select(AT(0.0), ln_four(ra[i], rt[i], 4u * c_a), live)));
    }
    for (var i = 0u; i < B_LOADS; i++) {
        put_b((lid / (BN / 4u) + B_STEP * i) * BS + (lid % (BN / 4u)) * 4u, rb[i]);
    }
}

@compute @workgroup_size(NI)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    let per_batch = p.tiles_m * p.tiles_n;
    // Workgroups past the end (slack of the 2-D folding) compute a copy of the last tile and
    // store nothing: an early return would put the cooperative operations below in non-uniform
    // control flow.
    let total = per_batch * p.batch;
    let w_raw = wg_index(wid, nwg);
    let live = w_raw < total;
    let w = min(w_raw, total - 1u);
    let z = w / per_batch;
    let t = tile_of(w % per_batch);
    let m0 = t.x * BM;
    let n0 = t.y * BN;
    let a_off4 = z * (p.a_bs / 4u);
    let b_off4 = z * (p.b_bs / 4u);

    for (var i = 0u; i < A_LOADS; i++) {
        rt[i] = ln_row(m0 + lid / (BK / 4u) + A_STEP * i);
    }
    if (PREFETCH) {
        fetch(0u, m0, n0, a_off4, b_off4, lid);
    }

    let sg_m = sg / 4u;
    let sg_n = sg % 4u;
    let a_base = sg_m * SB * AS;
    let b_base = sg_n * SB;

    var c00: FC; var c01: FC; var c02: FC; var c03: FC;
    var c10: FC; var c11: FC; var c12: FC; var c13: FC;
    var c20: FC; var c21: FC; var c22: FC; var c23: FC;
    var c30: FC; var c31: FC; var c32: FC; var c33: FC;

    let ktiles = (p.k + BK - 1u) / BK;
    for (var kt = 0u; kt < ktiles; kt++) {
        if (!PREFETCH) {
            fetch(kt, m0, n0, a_off4, b_off4, lid);
        }
        stage_tiles(lid, kt, m0);
        workgroupBarrier();
        // Fetch the next k-step while this one is multiplied.
        if (PREFETCH && kt + 1u < ktiles) {
            fetch(kt + 1u, m0, n0, a_off4, b_off4, lid);
        }
        for (var kk = 0u; kk < BK; kk += FS) {
            let bo = kk * BS + b_base;
            let b0 = coopLoadT<FB>(&Bs[bo / SW], BS / SW);
            let b1 = coopLoadT<FB>(&Bs[(bo + FS) / SW], BS / SW);
            let b2 = coopLoadT<FB>(&Bs[(bo + 2u * FS) / SW], BS / SW);
            let b3 = coopLoadT<FB>(&Bs[(bo + 3u * FS) / SW], BS / SW);
            let ao = a_base + kk;
            let a0 = coopLoadT<FA>(&As[ao / SW], AS / SW);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            let a1 = coopLoadT<FA>(&As[(ao + FS * AS) / SW], AS / SW);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
            let a2 = coopLoadT<FA>(&As[(ao + 2u * FS * AS) / SW], AS / SW);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c22 = coopMultiplyAdd(a2, b2, c22);
            c23 = coopMultiplyAdd(a2, b3, c23);
            let a3 = coopLoadT<FA>(&As[(ao + 3u * FS * AS) / SW], AS / SW);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
            c32 = coopMultiplyAdd(a3, b2, c32);
            c33 = coopMultiplyAdd(a3, b3, c33);
        }
        workgroupBarrier();
    }

    // Epilogue: the store stride must be a constant (naga 30.0.2's SPIR-V writer panics on a
    // run-time coopStoreT stride).
    let o_off4 = z * (p.o_bs / 4u);
    let sb = sg * STAGE;
    coopStoreT(c00, &stage[sb], 2u * FS); coopStoreT(c01, &stage[sb + FS], 2u * FS); flush(0u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c02, &stage[sb], 2u * FS); coopStoreT(c03, &stage[sb + FS], 2u * FS); flush(0u, 1u, m0, n0, o_off4, lid, live);
    coopStoreT(c10, &stage[sb], 2u * FS); coopStoreT(c11, &stage[sb + FS], 2u * FS); flush(1u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c12, &stage[sb], 2u * FS); coopStoreT(c13, &stage[sb + FS], 2u * FS); flush(1u, 1u, m0, n0, o_off4, lid, live);
    coopStoreT(c20, &stage[sb], 2u * FS); coopStoreT(c21, &stage[sb + FS], 2u * FS); flush(2u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c22, &stage[sb], 2u * FS); coopStoreT(c23, &stage[sb + FS], 2u * FS); flush(2u, 1u, m0, n0, o_off4, lid, live);
    coopStoreT(c30, &stage[sb], 2u * FS); coopStoreT(c31, &stage[sb + FS], 2u * FS); flush(3u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c32, &stage[sb], 2u * FS); coopStoreT(c33, &stage[sb + FS], 2u * FS); flush(3u, 1u, m0, n0, o_off4, lid, live);
}
