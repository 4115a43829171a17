//! `Definitions`: everything the user's code defines — assets, resources, default config —
//! checked once. Where and how runs happen is the [`Instance`](crate::Instance)'s business.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use crate::asset::{Asset, AssetSpec};
use crate::config::RunConfig;
use crate::error::{DefinitionsError, Error, Hint, Problem, Provider};
use crate::graph::{selection, AssetGraph, Graph};
use crate::key::AssetKey;
use crate::requirements::{ConfigSupply, Provided, Supply};
use crate::resources::Resources;

/// A checked set of assets with their resources and default config: what the user's code
/// defines. Pure, no I/O; cheap to clone.
///
/// Built with [`Definitions::builder`]; [`DefinitionsBuilder::build`] checks everything
/// and reports every problem at once, so nothing runs on a broken graph.
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
    pub(crate) graph: AssetGraph,
    pub(crate) resources: Resources,
    pub(crate) defaults: RunConfig,
}

impl Definitions {
    /// Starts an empty set of definitions.
    pub fn builder() -> DefinitionsBuilder {
        DefinitionsBuilder {
            assets: Vec::new(),
            resources: Resources::default(),
            defaults: RunConfig::default(),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The assets, dependencies first.
    pub fn assets(&self) -> impl Iterator<Item = &AssetSpec> + '_ {
        let graph = &self.0.graph;
        graph.order.iter().map(|&i| &graph.assets[i])
    }

    /// The asset with key `key`.
    pub fn asset(&self, key: &str) -> Option<&AssetSpec> {
        self.0.graph.get(key)
    }

    /// The keys of the assets that depend directly on `key`.
    pub fn dependents(&self, key: &str) -> Vec<&AssetKey> {
        let graph = &self.0.graph;
        match graph.index.get(key) {
            Some(&i) => graph.edges.downstream[i]
                .iter()
                .map(|&d| &graph.assets[d].key)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Resolves a selection (see [the syntax](crate#selections)) to asset keys,
    /// dependencies first.
    pub fn select(&self, selection: &str) -> Result<Vec<AssetKey>, Error> {
        let graph = &self.0.graph;
        Ok(selection::resolve(graph, selection)?
            .into_iter()
            .map(|i| graph.assets[i].key.clone())
            .collect())
    }

    /// The default run config.
    pub fn default_config(&self) -> &RunConfig {
        &self.0.defaults
    }

    /// The resources.
    pub fn resources(&self) -> &Resources {
        &self.0.resources
    }
}

impl std::fmt::Debug for Definitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definitions")
            .field("assets", &self.0.graph.assets.len())
            .field("resources", &self.0.resources)
            .finish_non_exhaustive()
    }
}

/// Collects assets, resources and defaults; [`build`](DefinitionsBuilder::build) checks them.
pub struct DefinitionsBuilder {
    assets: Vec<AssetSpec>,
    resources: Resources,
    defaults: RunConfig,
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

    /// Checks the definitions: keys unique and well-formed, every dependency registered,
    /// inputs of the type their producer makes, no cycles (each one named), every needed
    /// resource provided, and the default config valid. All problems are reported together.
    pub fn build(self) -> Result<Definitions, DefinitionsError> {
        let mut problems = Vec::new();
        let mut index: HashMap<AssetKey, usize> = HashMap::with_capacity(self.assets.len());
        let mut duplicates: HashMap<&AssetKey, usize> = HashMap::new();
        for (i, spec) in self.assets.iter().enumerate() {
            if !AssetKey::is_valid(&spec.key) {
                problems.push(Problem::InvalidKey {
                    key: crate::text::bounded(&spec.key, crate::text::ECHO_LIMIT).into_owned(),
                });
            }
            // The first asset registered under a key is the one the key names.
            match index.entry(spec.key.clone()) {
                Entry::Occupied(_) => *duplicates.entry(&spec.key).or_insert(1) += 1,
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        let mut duplicates: Vec<(&AssetKey, usize)> = duplicates.into_iter().collect();
        duplicates.sort();
        problems.extend(
            duplicates
                .into_iter()
                .map(|(key, count)| Problem::DuplicateAsset {
                    key: key.to_string(),
                    count,
                }),
        );

        let keys = || self.assets.iter().map(|s| s.key.as_str());
        let mut edges = Vec::new();
        for (i, spec) in self.assets.iter().enumerate() {
            if index[&spec.key] != i {
                continue;
            }
            for dep in &spec.deps {
                match index.get(dep) {
                    Some(&d) => edges.push((d, i)),
                    None => problems.push(Problem::UnknownDependency {
                        asset: spec.key.to_string(),
                        dep: dep.to_string(),
                        hint: Hint::closest(dep, keys()),
                    }),
                }
            }
            let inputs = |key: &AssetKey| match index.get(key) {
                Some(&d) => {
                    let (id, name) = self.assets[d].output_type;
                    Supply::Present(id, name)
                }
                None => Supply::Unchecked,
            };
            let config = match self.defaults.assets.get(spec.key.as_str()) {
                Some(value) => ConfigSupply::Given(value),
                None => ConfigSupply::Unchecked,
            };
            if let Err(found) = spec.needs.check(
                &spec.key,
                &Provided {
                    by: Provider::Definitions,
                    resources: Some(&self.resources),
                    inputs: &inputs,
                    config,
                },
            ) {
                problems.extend(found);
            }
        }
        let configured = self
            .defaults
            .assets
            .keys()
            .chain(self.defaults.retries.keys());
        for key in configured {
            if !index.contains_key(key.as_str()) {
                problems.push(Problem::ConfigForUnknownAsset {
                    key: crate::text::bounded(key, crate::text::ECHO_LIMIT).into_owned(),
                    hint: Hint::closest(key, keys()),
                });
            }
        }

        let edges = Graph::new(self.assets.len(), edges);
        let order = edges.topo_order();
        if order.is_none() {
            for cycle in edges.cycles() {
                problems.push(Problem::Cycle {
                    cycle: cycle
                        .into_iter()
                        .map(|i| self.assets[i].key.to_string())
                        .collect(),
                });
            }
        }
        DefinitionsError::check(problems)?;
        Ok(Definitions(Arc::new(Inner {
            graph: AssetGraph {
                order: order.expect("an acyclic graph has an order"),
                assets: self.assets,
                index,
                edges,
            },
            resources: self.resources,
            defaults: self.defaults,
        })))
    }
}
