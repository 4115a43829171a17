//! One module per page (or family of pages). Partitions and backfills get modules of their
//! own here, a route in `app::routes` and an entry in `page::NAV`.

pub(crate) mod asset;
pub(crate) mod automation;
pub(crate) mod catalog;
pub(crate) mod launchpad;
pub(crate) mod lineage;
pub(crate) mod run;
pub(crate) mod runs;
