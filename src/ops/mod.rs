pub mod elementwise;
pub mod norm;
