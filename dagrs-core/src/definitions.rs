//! `Definitions`: the checked set of assets, resources and default config a run draws from.

use std::collections::HashMap;
use std::sync::Arc;

use crate::asset::{Asset, AssetSpec};
use crate::config::RunConfig;
use crate::error::{Error, Hint, Problems};
use crate::graph::Graph;
use crate::key::AssetKey;
use crate::param::Resources;
use crate::storage::{InMemoryStorage, Retention, Storage};

/// The default limit on steps running at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// A checked set of assets with their resources, default config and storage.
///
/// Built with [`Definitions::builder`]; [`DefinitionsBuilder::build`] checks everything
/// and reports every problem at once, so nothing runs on a broken graph. Cheap to clone.
///
/// ```
/// use dagrs_core::prelude::*;
///
/// #[asset]
/// async fn numbers() -> Result<Vec<u32>> { Ok(vec![1, 2, 3]) }
///
/// #[asset]
/// async fn total(numbers: Input<numbers>) -> Result<u32> { Ok(numbers.iter().sum()) }
///
/// let defs = Definitions::builder().asset::<numbers>().asset::<total>().build().unwrap();
/// assert_eq!(defs.select("numbers+").unwrap(), ["numbers", "total"]);
/// ```
#[derive(Clone)]
pub struct Definitions(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) assets: Vec<AssetSpec>,
    pub(crate) index: HashMap<AssetKey, usize>,
    pub(crate) graph: Graph,
    /// Every asset index, dependencies first.
    pub(crate) order: Vec<usize>,
    pub(crate) resources: Resources,
    pub(crate) defaults: RunConfig,
    pub(crate) storage: Arc<dyn Storage>,
    /// Whether the storage was chosen explicitly (else it is the in-memory default).
    pub(crate) storage_chosen: bool,
    pub(crate) retention: Option<Retention>,
    pub(crate) max_concurrency: usize,
}

impl Definitions {
    /// Starts an empty set of definitions.
    pub fn builder() -> DefinitionsBuilder {
        DefinitionsBuilder {
            assets: Vec::new(),
            resources: Resources::default(),
            defaults: RunConfig::default(),
            storage: None,
            retention: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The assets, dependencies first.
    pub fn assets(&self) -> impl Iterator<Item = &AssetSpec> + '_ {
        self.0.order.iter().map(|&i| &self.0.assets[i])
    }

    /// The asset with key `key`.
    pub fn asset(&self, key: &str) -> Option<&AssetSpec> {
        self.0.index.get(key).map(|&i| &self.0.assets[i])
    }

    /// The keys of the assets that depend directly on `key`.
    pub fn dependents(&self, key: &str) -> Vec<&AssetKey> {
        match self.0.index.get(key) {
            Some(&i) => self.0.graph.downstream[i]
                .iter()
                .map(|&d| &self.0.assets[d].key)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Resolves a selection (see [the syntax](crate#selections)) to asset keys,
    /// dependencies first.
    pub fn select(&self, selection: &str) -> Result<Vec<AssetKey>, Error> {
        Ok(crate::selection::resolve(self, selection)?
            .into_iter()
            .map(|i| self.0.assets[i].key.clone())
            .collect())
    }

    /// The default run config.
    pub fn default_config(&self) -> &RunConfig {
        &self.0.defaults
    }

    /// The storage runs are recorded in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.0.storage
    }

    /// The default limit on steps running at once.
    pub fn max_concurrency(&self) -> usize {
        self.0.max_concurrency
    }

    /// Whether a storage was chosen with [`DefinitionsBuilder::storage`]; otherwise runs are
    /// kept in memory, and the CLI uses the embedded SQLite store instead.
    pub fn has_chosen_storage(&self) -> bool {
        self.0.storage_chosen
    }

    /// The same definitions, recording runs in `storage`.
    pub fn with_storage(&self, storage: Arc<dyn Storage>) -> Definitions {
        Definitions(Arc::new(Inner {
            assets: self.0.assets.clone(),
            index: self.0.index.clone(),
            graph: self.0.graph.clone(),
            order: self.0.order.clone(),
            resources: self.0.resources.clone(),
            defaults: self.0.defaults.clone(),
            storage,
            storage_chosen: true,
            retention: self.0.retention,
            max_concurrency: self.0.max_concurrency,
        }))
    }

    /// The retention enforced after each run, if any.
    pub fn retention(&self) -> Option<Retention> {
        self.0.retention
    }
}

impl std::fmt::Debug for Definitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definitions")
            .field("assets", &self.0.assets.len())
            .field("resources", &self.0.resources)
            .finish_non_exhaustive()
    }
}

/// Collects assets, resources and defaults; [`build`](DefinitionsBuilder::build) checks them.
pub struct DefinitionsBuilder {
    assets: Vec<AssetSpec>,
    resources: Resources,
    defaults: RunConfig,
    storage: Option<Arc<dyn Storage>>,
    retention: Option<Retention>,
    max_concurrency: usize,
}

impl DefinitionsBuilder {
    /// Adds the asset `A` (a function marked `#[asset]`).
    pub fn asset<A: Asset>(mut self) -> Self {
        self.assets.push(A::spec());
        self
    }

    /// Adds assets given as specs, e.g. from [`assets!`](crate::assets) or built by hand.
    pub fn specs(mut self, specs: impl IntoIterator<Item = AssetSpec>) -> Self {
        self.assets.extend(specs);
        self
    }

    /// Provides a resource, injected into assets that take `Res<R>`. A second resource of
    /// the same type replaces the first.
    pub fn resource<R: Send + Sync + 'static>(mut self, resource: R) -> Self {
        self.resources.insert(resource);
        self
    }

    /// Sets the default run config; each run's config is merged over it.
    pub fn config(mut self, defaults: RunConfig) -> Self {
        self.defaults = defaults;
        self
    }

    /// Records runs in `storage` instead of in memory.
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Records runs in a shared storage.
    pub fn shared_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Prunes the event log to `keep` after each run (see [`Storage::prune`]).
    pub fn retention(mut self, keep: Retention) -> Self {
        self.retention = Some(keep);
        self
    }

    /// Limits how many steps run at once (default [`DEFAULT_MAX_CONCURRENCY`]; at least 1).
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = limit.max(1);
        self
    }

    /// Checks the definitions: keys unique and well-formed, every dependency registered,
    /// inputs of the type their producer makes, no cycles (each one named), every needed
    /// resource provided, and the default config valid. All problems are reported together.
    pub fn build(self) -> Result<Definitions, Error> {
        let mut problems = Vec::new();
        let mut index: HashMap<AssetKey, usize> = HashMap::with_capacity(self.assets.len());
        let mut counts: HashMap<&AssetKey, usize> = HashMap::new();
        for (i, spec) in self.assets.iter().enumerate() {
            if !AssetKey::is_valid(&spec.key) {
                problems.push(Error::InvalidKey {
                    key: spec.key.to_string(),
                });
            }
            index.entry(spec.key.clone()).or_insert(i);
            *counts.entry(&spec.key).or_default() += 1;
        }
        let mut duplicates: Vec<(&AssetKey, usize)> =
            counts.into_iter().filter(|(_, n)| *n > 1).collect();
        duplicates.sort();
        problems.extend(
            duplicates
                .into_iter()
                .map(|(key, count)| Error::DuplicateAsset {
                    key: key.to_string(),
                    count,
                }),
        );

        let mut edges = Vec::new();
        for (i, spec) in self.assets.iter().enumerate() {
            if index[&spec.key] != i {
                continue;
            }
            for dep in &spec.deps {
                match index.get(dep) {
                    Some(&d) => edges.push((d, i)),
                    None => problems.push(Error::UnknownDependency {
                        asset: spec.key.to_string(),
                        dep: dep.to_string(),
                        hint: Hint::closest(dep, self.assets.iter().map(|s| s.key.as_str())),
                    }),
                }
            }
            for input in &spec.needs.inputs {
                if let Some(&d) = index.get(&input.key) {
                    let producer = &self.assets[d];
                    if producer.output_type.0 != input.type_id {
                        problems.push(Error::InputTypeMismatch {
                            asset: spec.key.to_string(),
                            input: input.key.to_string(),
                            expected: input.type_name,
                            actual: producer.output_type.1,
                        });
                    }
                }
            }
            for &(id, resource) in &spec.needs.resources {
                if !self.resources.contains(id) {
                    problems.push(Error::MissingResource {
                        asset: spec.key.to_string(),
                        resource,
                    });
                }
            }
        }

        let graph = Graph::new(self.assets.len(), edges);
        let order = graph.topo_order();
        if order.is_none() {
            for cycle in graph.cycles() {
                problems.push(Error::Cycle {
                    cycle: cycle
                        .into_iter()
                        .map(|i| self.assets[i].key.to_string())
                        .collect(),
                });
            }
        }

        for (key, value) in &self.defaults.assets {
            match index.get(key.as_str()) {
                None => problems.push(Error::ConfigForUnknownAsset {
                    key: key.clone(),
                    hint: Hint::closest(key, self.assets.iter().map(|s| s.key.as_str())),
                }),
                Some(&i) => match &self.assets[i].needs.config {
                    None => problems.push(Error::UnexpectedConfig { asset: key.clone() }),
                    Some(need) => {
                        if let Err(e) = (need.decode)(key, Some(value)) {
                            problems.push(e);
                        }
                    }
                },
            }
        }

        Problems::check(problems)?;
        Ok(Definitions(Arc::new(Inner {
            order: order.expect("an acyclic graph has an order"),
            assets: self.assets,
            index,
            graph,
            resources: self.resources,
            defaults: self.defaults,
            storage_chosen: self.storage.is_some(),
            storage: self
                .storage
                .unwrap_or_else(|| Arc::new(InMemoryStorage::new())),
            retention: self.retention,
            max_concurrency: self.max_concurrency,
        })))
    }
}
