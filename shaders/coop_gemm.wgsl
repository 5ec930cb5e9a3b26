// The cooperative-matrix (tensor-core) GEMM core of the matmul (matmul_coop.wgsl) and of the
// implicit-GEMM convolution (conv_coop.wgsl): f16 × f16 → f32 products on FS×FS×FS fragments
// (FS = 16, or 8 where the adapter has only those; the preamble declares FS and the fragment
// types FA, FB, FC).
//
// NSG subgroups of SG invocations in an SGM × SGN grid, each owning an SB × SB block of the
// output (SB = 4·FS) as 4 × 4 accumulators: a BM × BN workgroup tile (128 × 256 with 8 subgroups
// four blocks wide at FS = 16). K goes BK = KSTEP·FS (2·FS, or 64) at a time through the
// staged tiles As [BM][BK] and Bs [BK][BN] (coop_tiles_s1.wgsl or coop_tiles_s4.wgsl declares
// them, with TV, the f16 per element, and put_a / put_b), rows padded by 8 f16 so that the
// 16-byte row pieces of one fragment load land on different banks. With PREFETCH the next K
// step's global loads are in flight during this step's multiplies; without, each step is
// loaded, then staged (fewer live registers). The accumulators and fragments are named
// variables, not arrays: an array of cooperative matrices indexed in a loop can end up in local
// memory.
//
// Every cooperative operation is executed by all subgroups the same number of times (uniform
// control flow: workgroups past the end of a grid compute a clamped tile and store nothing);
// only addresses depend on the subgroup id. Each accumulator adds its products in K order, one
// fragment step after the other, whatever the tile: tiles change the time, never a value.
//
// The op's file declares the constants NSG, SG, BN, PREFETCH and KSTEP, and the hooks
//   struct Tile                                the workgroup's tile, as its hooks need it;
//   fn tile_begin(wid, nwg, lid) -> Tile      which tile this workgroup owns (it may fill
//                                              workgroup memory: a barrier follows);
//   fn k_range(t: Tile) -> vec2<u32>          the K steps [first, end) the tile runs;
//   fn fetch(t: Tile, ks: u32, lid: u32)      K step ks's global loads, into registers;
//   fn stage_tiles(t: Tile, ks: u32, lid: u32)  the fetched registers into As and Bs;
//   fn store_pair(t: Tile, ca: FC, cb: FC, i: u32, jp: u32, sg: u32, lane: u32, lid: u32)
//                                              accumulators (i, 2·jp) and (i, 2·jp + 1) of
//                                              subgroup sg's block to memory (every subgroup
//                                              calls it the same 8 times: it may hold barriers).

const NI: u32 = NSG * SG;
const SB: u32 = 4u * FS;
const SGN: u32 = BN / SB;
const SGM: u32 = NSG / SGN;
const BM: u32 = SGM * SB;
const BK: u32 = KSTEP * FS;
const AS: u32 = BK + 8u;
const BS: u32 = BN + 8u;

@compute @workgroup_size(NI)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let t = tile_begin(wid, nwg, lid);
    workgroupBarrier();

    // This subgroup's block in the tile, as offsets into the staged tiles.
    let a_base = (sg / SGN) * SB * AS;
    let b_base = (sg % SGN) * SB;

    var c00: FC; var c01: FC; var c02: FC; var c03: FC;
    var c10: FC; var c11: FC; var c12: FC; var c13: FC;
    var c20: FC; var c21: FC; var c22: FC; var c23: FC;
    var c30: FC; var c31: FC; var c32: FC; var c33: FC;

    let ks_range = k_range(t);
    if (PREFETCH) {
        fetch(t, ks_range.x, lid);
    }
    for (var ks = ks_range.x; ks < ks_range.y; ks++) {
        if (!PREFETCH) {
            fetch(t, ks, lid);
        }
        stage_tiles(t, ks, lid);
        workgroupBarrier();
        // Fetch the next K step while this one is multiplied.
        if (PREFETCH && ks + 1u < ks_range.y) {
            fetch(t, ks + 1u, lid);
        }
        for (var kk = 0u; kk < BK; kk += FS) {
            let bo = kk * BS + b_base;
            let b0 = coopLoadT<FB>(&Bs[bo / TV], BS / TV);
            let b1 = coopLoadT<FB>(&Bs[(bo + FS) / TV], BS / TV);
            let b2 = coopLoadT<FB>(&Bs[(bo + 2u * FS) / TV], BS / TV);
            let b3 = coopLoadT<FB>(&Bs[(bo + 3u * FS) / TV], BS / TV);
            let ao = a_base + kk;
            let a0 = coopLoadT<FA>(&As[ao / TV], AS / TV);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            let a1 = coopLoadT<FA>(&As[(ao + FS * AS) / TV], AS / TV);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
            let a2 = coopLoadT<FA>(&As[(ao + 2u * FS * AS) / TV], AS / TV);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c22 = coopMultiplyAdd(a2, b2, c22);
            c23 = coopMultiplyAdd(a2, b3, c23);
            let a3 = coopLoadT<FA>(&As[(ao + 3u * FS * AS) / TV], AS / TV);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
            c32 = coopMultiplyAdd(a3, b2, c32);
            c33 = coopMultiplyAdd(a3, b3, c33);
        }
        workgroupBarrier();
    }

    store_pair(t, c00, c01, 0u, 0u, sg, lane, lid);
    store_pair(t, c02, c03, 0u, 1u, sg, lane, lid);
    store_pair(t, c10, c11, 1u, 0u, sg, lane, lid);
    store_pair(t, c12, c13, 1u, 1u, sg, lane, lid);
    store_pair(t, c20, c21, 2u, 0u, sg, lane, lid);
    store_pair(t, c22, c23, 2u, 1u, sg, lane, lid);
    store_pair(t, c30, c31, 3u, 0u, sg, lane, lid);
    store_pair(t, c32, c33, 3u, 1u, sg, lane, lid);
}
