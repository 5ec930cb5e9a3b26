pub mod elementwise;
pub mod matmul;
pub mod norm;
