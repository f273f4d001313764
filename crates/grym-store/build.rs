//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds
//! them, and cargo does not otherwise watch files a macro reads.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
