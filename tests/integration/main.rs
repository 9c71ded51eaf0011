//! The integration tests: one binary (ripgrep's `tests/` layout), each
//! file a module, the helpers shared in `common/`.

mod authenticated_downloads;
mod boot_transitions;
mod bootenv_interop;
mod bounded_children;
mod cli;
mod common;
mod config_and_host_facts;
mod config_from_earlier_versions;
mod delta_update;
mod download_pacing;
mod download_retries;
#[cfg(feature = "failpoints")]
mod efi_boot;
#[cfg(feature = "failpoints")]
mod env_paths;
#[cfg(feature = "failpoints")]
mod fault_matrix;
mod fetch_hostile;
mod fetch_http;
mod fleet_clock_and_errors;
mod fleet_prometheus;
mod fleet_rollout;
mod fleet_simulation;
mod fleetlock;
mod hostile_install;
mod inputs_others_could_change;
mod install_hooks;
mod install_over_http;
mod install_refuses_bad_input;
#[cfg(feature = "failpoints")]
mod manual_verbs;
mod minisign_interop;
mod pack_refuses_bad_input;
mod probation;
#[cfg(feature = "failpoints")]
mod publish_crash;
#[cfg(feature = "failpoints")]
mod random_walk;
mod refusal_table;
mod release_channel;
mod release_tracks;
mod replaceable_checks;
mod s3_releases;
#[cfg(feature = "failpoints")]
mod systemd_boot;
#[cfg(feature = "failpoints")]
mod torn_env_writes;
mod trust_roots;
mod tuf_attacks;
mod update_loop;
