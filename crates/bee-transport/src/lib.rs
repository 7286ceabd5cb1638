//! # bee-transport — connections between nodes
//! (being written)
