//! Rebuild when the admin console's files change: they are embedded at compile time, and a
//! new file would otherwise not be picked up until a Rust file changed.

fn main() {
    println!("cargo:rerun-if-changed=../console");
}
