//! End-to-end tests: each starts the real `wasmhive` binary on port 0 with
//! a temporary plugins and data directory, drops real fixture guests in,
//! and talks to it over HTTP as a user would.
//!
//! The guests must be built first: `cargo xtask test` does it (or
//! `cargo xtask build-plugins`).

#![allow(clippy::print_stdout)] // figures worth seeing with --nocapture

mod servers;
mod support;
mod telemetry;

mod api;
mod authoring;
mod client;
mod clocked;
mod cluster;
mod dashboard;
mod durability;
mod handlers;
mod hostile;
mod models;
mod postgres;
mod reload;
mod scheduling;
mod seed;
mod shutdown;
mod tenants;
