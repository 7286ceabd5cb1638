//! # bee-registry — who is in the cluster and what they are called
//! (being written)
