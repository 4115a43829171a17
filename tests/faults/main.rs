//! The fault suite: the command line as a careful, hostile user drives it — bad input of
//! every kind, signals and kills at any point, concurrent processes, damaged, read-only and
//! missing stores, PostgreSQL stopped mid-run — and what dagrs promises through all of it
//! (docs/reliability.md): exit codes 0, 1 or 2, no panic, bounded messages, nothing stored
//! lost.

mod backfill;
mod cli;
mod home;
mod inputs;
mod postgres;
mod processes;
mod workers;
