//! [`StepScope`]: everything one step can draw its parameters from.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::ConfigValue;
use crate::context::AssetContext;
use crate::error::Error;
use crate::key::AssetKey;
use crate::resources::Resources;

/// A type-erased value shared between steps: an asset's output, a resource.
pub(crate) type Shared = Arc<dyn Any + Send + Sync>;

/// Everything a step can draw its parameters from: its context, the resources, its decoded
/// config and the outputs of its upstream assets. Compute functions of hand-built
/// [`AssetSpec`](crate::AssetSpec)s take it directly.
pub struct StepScope {
    pub(crate) context: AssetContext,
    pub(crate) resources: Resources,
    pub(crate) config: Option<ConfigValue>,
    pub(crate) inputs: Arc<HashMap<AssetKey, Shared>>,
}

impl StepScope {
    /// The step's context.
    pub fn context(&self) -> &AssetContext {
        &self.context
    }

    /// The resource of type `R`.
    pub fn resource<R: Send + Sync + 'static>(&self) -> Result<Arc<R>, Error> {
        self.resources
            .get::<R>()
            .ok_or_else(|| self.injection::<R>("no resource of this type was provided".into()))
    }

    /// The step's config, as `C` (its defaults when the step was given none).
    pub fn config<C: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<C>, Error> {
        match &self.config {
            Some(value) => Arc::clone(value)
                .downcast::<C>()
                .map_err(|_| self.injection::<C>("the step's config has another type".into())),
            None => crate::config::decode::<C>(self.context.asset_key(), None)
                .map(Arc::new)
                .map_err(|problem| self.injection::<C>(problem.to_string())),
        }
    }

    /// The output of upstream asset `key`, as `T`.
    pub fn input<T: Send + Sync + 'static>(&self, key: &str) -> Result<Arc<T>, Error> {
        let value = self.inputs.get(key).ok_or_else(|| {
            self.injection::<T>(format!(
                "the output of `{key}` is not available to this step"
            ))
        })?;
        Arc::clone(value)
            .downcast::<T>()
            .map_err(|_| self.injection::<T>(format!("the output of `{key}` has another type")))
    }

    fn injection<T>(&self, reason: String) -> Error {
        Error::Injection {
            asset: self.context.asset_key().to_string(),
            param: std::any::type_name::<T>(),
            reason,
        }
    }
}
