pub mod elementwise;
pub mod concat;
pub mod embed;
pub mod layout;
pub mod resize;
#[cfg(test)]
mod misc_golden;
