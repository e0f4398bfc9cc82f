//! End-to-end tests: the real `loupe` binary, real OTLP clients, real HTTP.
//! One test binary (modules below) to keep link times down.

mod access;
mod alerts;
mod bad_input;
mod browser;
mod capacity;
mod crash;
mod disk_full;
mod harness;
mod multi_node;
mod otlp_json;
mod otlp_proto;
mod otlp_sdk;
mod overload;
mod problems;
mod scenarios;
mod search;
mod shared;
mod sql_api;
mod storage_limits;
mod traces;
mod ui;
mod webhook_receiver;
