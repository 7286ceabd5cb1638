//! `bee-demo`: the `bee` program with the demo game's service kinds — what
//! `cargo xtask demo` runs for each node.

fn main() {
    bee_demo::app().main()
}
