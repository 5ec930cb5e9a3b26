//! Plain-data video floor (shared/design/layout.md floor 1): y4m streams in and out ([`y4m`])
//! and the CPU references for colour conversion and chroma resampling ([`color`]). No GPU, no
//! models: frames are frames. The product is the streaming y4m filter of issue 9 (deliverables 5
//! and 8).

pub mod color;
pub mod preview;
pub mod y4m;
