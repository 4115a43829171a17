//! One module per page (or family of pages), each with its routes in `app::routes` and,
//! for a top-level page, an entry in `page::NAV`.

pub(crate) mod asset;
pub(crate) mod automation;
pub(crate) mod backfills;
pub(crate) mod catalog;
pub(crate) mod launchpad;
pub(crate) mod lineage;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod workers;
