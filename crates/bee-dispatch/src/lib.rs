//! # bee-dispatch — services and how a message reaches them
//! (being written)
