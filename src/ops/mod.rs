pub mod elementwise;
pub mod matmul;
