pub mod elementwise;
pub mod concat;
pub mod embed;
pub mod layout;
pub mod resize;
