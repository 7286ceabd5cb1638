//! The production `bee` binary: every built-in service kind (`echo`, `sink`, `slow`,
//! `cservice_proxy`, `mysqlpool`) and nothing else. A game's own binary is the same few
//! lines with its kinds added (see `bee_node::App`).

fn main() {
    bee_node::App::new().main()
}
