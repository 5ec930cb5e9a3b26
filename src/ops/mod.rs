pub mod elementwise;
