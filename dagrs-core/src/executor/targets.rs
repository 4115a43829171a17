//! The partitions a run targets: its key or range checked against the selected assets'
//! partitions definition, and what each partitioned step needs from unselected upstream
//! partitioned assets.

use crate::definitions::Definitions;
use crate::error::{Error, Problem};
use crate::partition::{PartitionContext, PartitionMapping, PartitionRange, PartitionsDefinition};
use crate::storage::Storage;
use crate::text::{bounded, bounded_list, ECHO_LIMIT};

/// A run's partitions, checked.
pub(crate) struct Target {
    /// The partitions definition of the selected partitioned assets.
    pub(crate) def: PartitionsDefinition,
    /// What the run materializes.
    pub(crate) range: PartitionRange,
    /// The time and dynamic keys it was checked against.
    pub(crate) ctx: PartitionContext,
}

/// Checks a run's partition against its selection: a partitioned selection needs one, of the
/// one definition its partitioned assets share, and an unpartitioned one takes none.
pub(crate) async fn resolve(
    defs: &Definitions,
    storage: &dyn Storage,
    selected: &[usize],
    partition: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Result<Option<Target>, Error> {
    let graph = &defs.inner().graph;
    let partitioned: Vec<(&str, &PartitionsDefinition)> = selected
        .iter()
        .filter_map(|&i| {
            let spec = &graph.assets[i];
            Some((spec.key.as_str(), spec.partitions.as_ref()?))
        })
        .collect();
    let invalid = |target: &str, reason: String| Problem::InvalidPartition {
        target: bounded(target, ECHO_LIMIT).into_owned(),
        reason,
    };
    let Some(text) = partition else {
        if !partitioned.is_empty() {
            let names = bounded_list(partitioned.iter().map(|(k, _)| format!("`{k}`")), ", ");
            problems.push(Problem::InvalidPartition {
                target: String::new(),
                reason: format!(
                    "{names} are partitioned: name a partition (`--partition KEY` or \
                     `--partition-range START...END`, `RunOptions::partition`) or launch a \
                     backfill"
                ),
            });
        }
        return Ok(None);
    };
    let def = match crate::partition::shared(selected.iter().map(|&i| &graph.assets[i])) {
        Ok(Some(def)) => def,
        Ok(None) => {
            problems.push(invalid(
                text,
                "none of the selected assets is partitioned; run them without a partition".into(),
            ));
            return Ok(None);
        }
        Err(reason) => {
            problems.push(invalid(text, reason));
            return Ok(None);
        }
    };
    let ctx = PartitionContext::load(storage, [def], crate::event::now().timestamp()).await?;
    match def.parse_target(text, &ctx) {
        Ok(range) => Ok(Some(Target {
            def: def.clone(),
            range,
            ctx,
        })),
        Err(reason) => {
            problems.push(invalid(text, reason));
            Ok(None)
        }
    }
}

impl Target {
    /// Every partitioned step's unselected partitioned dependencies must hold the partitions
    /// its mapping names.
    pub(crate) async fn check_upstream(
        &self,
        defs: &Definitions,
        storage: &dyn Storage,
        selected: &[usize],
        is_selected: &[bool],
        problems: &mut Vec<Problem>,
    ) -> Result<(), Error> {
        let graph = &defs.inner().graph;
        for &i in selected {
            let spec = &graph.assets[i];
            if spec.partitions.is_none() {
                continue;
            }
            for dep in &spec.deps {
                let Some(&d) = graph.index.get(dep) else {
                    continue;
                };
                let Some(up) = graph.assets[d].partitions.as_ref() else {
                    continue;
                };
                if is_selected[d] {
                    continue;
                }
                let Some(mapping) = self.mapping(defs, i, d) else {
                    continue;
                };
                let ctx = PartitionContext::load(storage, [up], self.ctx.now).await?;
                let needed = mapping.upstream(Some((&self.def, &self.range)), up, &ctx);
                let status = storage.partition_status(dep).await?;
                let missing = needed.difference(&status.materialized);
                if missing.is_empty() {
                    continue;
                }
                let ranges = up.describe(&missing);
                problems.push(Problem::UpstreamPartitions {
                    asset: spec.key.to_string(),
                    partition: self.range.key.clone(),
                    dep: dep.to_string(),
                    missing_count: ranges.iter().map(|(_, n)| n).sum(),
                    missing: bounded_list(ranges.iter().map(|(r, _)| &r.key), ", "),
                });
            }
        }
        Ok(())
    }

    /// The mapping from step `down`'s partitions to dependency `up`'s.
    fn mapping(&self, defs: &Definitions, down: usize, up: usize) -> Option<PartitionMapping> {
        let graph = &defs.inner().graph;
        let (down, up) = (&graph.assets[down], &graph.assets[up]);
        let up_def = up.partitions.as_ref()?;
        match down.mapping_for(&up.key) {
            Some(mapping) => Some(mapping.clone()),
            None => PartitionMapping::default_for(down.partitions.as_ref(), up_def).ok(),
        }
    }

    /// The one upstream range whose materialization a partitioned step's `Input` of
    /// partitioned dependency `up` reads; `None` when the step is not partitioned, the
    /// dependency is not, or the mapping names several ranges (the latest materialization is
    /// read then).
    pub(crate) fn mapped_input(
        &self,
        defs: &Definitions,
        down: usize,
        up: usize,
    ) -> Option<PartitionRange> {
        let graph = &defs.inner().graph;
        graph.assets[down].partitions.as_ref()?;
        let up_def = graph.assets[up].partitions.as_ref()?;
        let mapping = self.mapping(defs, down, up)?;
        let needed = mapping.upstream(Some((&self.def, &self.range)), up_def, &self.ctx);
        let mut ranges = up_def.describe(&needed).into_iter();
        match (ranges.next(), ranges.next()) {
            (Some((range, _)), None) => Some(range),
            _ => None,
        }
    }
}
