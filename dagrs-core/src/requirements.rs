//! What an asset needs, and the one check of whether it gets it: used when definitions are
//! built, when a run is planned, and when a test invokes an asset.

use std::any::TypeId;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{self, ConfigValue};
use crate::error::{Problem, Provider};
use crate::key::AssetKey;
use crate::resources::Resources;

/// What an asset needs before it can run: resources, a config type and upstream outputs.
/// Each parameter type declares its needs through
/// [`AssetParam::declare`](crate::AssetParam::declare), and they are checked before anything
/// runs: when definitions are built, when a run is planned, and when a test invokes the asset.
#[derive(Default, Clone)]
pub struct Requirements {
    pub(crate) resources: Vec<(TypeId, &'static str)>,
    pub(crate) config: Option<ConfigNeed>,
    pub(crate) inputs: Vec<InputNeed>,
    /// The type of the `Partition<T>` parameter, if the asset takes one.
    pub(crate) partition: Option<&'static str>,
}

/// How to decode an asset's config.
#[derive(Clone)]
pub(crate) struct ConfigNeed {
    pub(crate) decode: fn(&str, Option<&Value>) -> Result<ConfigValue, Problem>,
}

/// An upstream output an asset takes.
#[derive(Clone)]
pub(crate) struct InputNeed {
    pub(crate) key: AssetKey,
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
}

/// Whether an input is there, as the caller of [`Requirements::check`] knows it.
pub(crate) enum Supply {
    /// Present, of this type (id and name).
    Present(TypeId, &'static str),
    /// Not there.
    Missing,
    /// Not for this check to judge (e.g. an unknown dependency, reported elsewhere).
    Unchecked,
}

/// What is provided to an asset.
pub(crate) struct Provided<'a> {
    /// Who provides it: decides how problems say to fix them.
    pub(crate) by: Provider,
    /// The resources, or `None` when they were checked before.
    pub(crate) resources: Option<&'a Resources>,
    /// Whether each input is there.
    pub(crate) inputs: &'a dyn Fn(&AssetKey) -> Supply,
    /// The asset's config.
    pub(crate) config: ConfigSupply<'a>,
}

/// The config given to an asset.
pub(crate) enum ConfigSupply<'a> {
    /// This value.
    Given(&'a Value),
    /// None: the config type's defaults apply.
    Absent,
    /// Not for this check to judge (definitions without a default for the asset: each run
    /// gives it).
    Unchecked,
}

impl Requirements {
    /// Declares a partition parameter of type `T`: the asset must be partitioned.
    pub fn partition<T>(&mut self) {
        self.partition = Some(std::any::type_name::<T>());
    }

    /// Declares a resource of type `R`.
    pub fn resource<R: Send + Sync + 'static>(&mut self) {
        let id = TypeId::of::<R>();
        if !self.resources.iter().any(|(t, _)| *t == id) {
            self.resources.push((id, std::any::type_name::<R>()));
        }
    }

    /// Declares a config of type `C`, deserialized from the asset's run config.
    pub fn config<C: DeserializeOwned + Send + Sync + 'static>(&mut self) {
        fn decode<C: DeserializeOwned + Send + Sync + 'static>(
            asset: &str,
            value: Option<&Value>,
        ) -> Result<ConfigValue, Problem> {
            Ok(Arc::new(config::decode::<C>(asset, value)?))
        }
        self.config = Some(ConfigNeed {
            decode: decode::<C>,
        });
    }

    /// Declares that the asset takes the output of asset `key`, of type `T`.
    pub fn input<T: Send + Sync + 'static>(&mut self, key: &str) {
        self.inputs.push(InputNeed {
            key: key.into(),
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        });
    }

    /// Whether the asset takes a config.
    pub fn takes_config(&self) -> bool {
        self.config.is_some()
    }

    /// Checks that `provided` covers every need of asset `asset`; returns its decoded config
    /// (when it takes one), or every problem found.
    pub(crate) fn check(
        &self,
        asset: &str,
        provided: &Provided<'_>,
    ) -> Result<Option<ConfigValue>, Vec<Problem>> {
        let mut problems = Vec::new();
        if let Some(resources) = provided.resources {
            for &(id, resource) in &self.resources {
                if !resources.contains(id) {
                    problems.push(Problem::MissingResource {
                        asset: asset.to_owned(),
                        resource,
                        provider: provided.by,
                    });
                }
            }
        }
        for input in &self.inputs {
            match (provided.inputs)(&input.key) {
                Supply::Present(id, _) if id == input.type_id => {}
                Supply::Present(_, actual) => problems.push(Problem::InputTypeMismatch {
                    asset: asset.to_owned(),
                    input: input.key.to_string(),
                    expected: input.type_name,
                    actual,
                }),
                Supply::Missing => problems.push(Problem::MissingInput {
                    asset: asset.to_owned(),
                    input: input.key.to_string(),
                    provider: provided.by,
                }),
                Supply::Unchecked => {}
            }
        }
        let given = match provided.config {
            ConfigSupply::Given(value) => Some(Some(value)),
            ConfigSupply::Absent => Some(None),
            ConfigSupply::Unchecked => None,
        };
        let config = match (&self.config, given) {
            (Some(need), Some(value)) => match (need.decode)(asset, value) {
                Ok(config) => Some(config),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
            (None, Some(Some(_))) => {
                problems.push(Problem::UnexpectedConfig {
                    asset: asset.to_owned(),
                    provider: provided.by,
                });
                None
            }
            _ => None,
        };
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}
