// What both Winograd transforms share (ops/winograd; prepended to winograd_input.wgsl and
// winograd_output.wgsl): their parameters and which tile and channels an invocation owns.
// Images are [N, H, W, C] channels-last; tiles are 2×2 output blocks, TH = ⌈H/2⌉ rows by
// TW = ⌈W/2⌉; the 16 planes hold a band of BTH tile rows from ty0 as [N, BTH, TW, C].

struct Params {
    units: u32,   // N·BTH·TW·cv: the vec4 units of one plane that hold values
    cv: u32,      // C / 4 (the image's channels: Cin for the input transform, Cout for the output)
    h: u32,
    w: u32,
    bth: u32,     // tile rows of the band the planes hold
    tw: u32,
    plane: u32,   // vec4 units from one plane to the next (≥ units)
    ty0: u32,     // the band's first tile row
    res_rep: u32, // output pixels per residual row (the output transform's)
    seg_frames: u32, // images per GroupNorm segment (winograd_x_norm.wgsl's)
}

@group(0) @binding(0) var<uniform> p: Params;

// Invocation `u`'s unit of a plane: four channels c4 of tile (ty, tx) of image img.
struct TileAt {
    c4: u32,
    tx: u32,
    ty: u32,
    img: u32,
}

fn tile_at(u: u32) -> TileAt {
    let tile = u / p.cv;
    let rest = tile / p.tw;
    return TileAt(u % p.cv, tile % p.tw, p.ty0 + rest % p.bth, rest / p.bth);
}
