//! # bee-proto — the demo game's protobuf messages
//! (being written)
