//! `greeter`: the `bee` program with the example's service kinds (`greeter run CONFIG`,
//! `greeter call …`, the same command line as `bee`).

fn main() {
    bee_example_greeter::app().main()
}
