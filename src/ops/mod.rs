pub mod elementwise;
pub mod conv;
