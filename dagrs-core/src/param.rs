//! Parameter injection: what an asset function's parameters can be, decided by type the way
//! axum extractors work.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::asset::Asset;
use crate::context::AssetContext;
use crate::error::Error;
use crate::partition::{PartitionRange, TimeWindow};
use crate::requirements::Requirements;
use crate::scope::StepScope;

/// A type that can be a parameter of an asset function.
///
/// [`declare`](AssetParam::declare) tells `Definitions::build` what the parameter needs, so
/// a missing resource or config mistake is reported before any asset runs;
/// [`extract`](AssetParam::extract) produces the value when the step runs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected into an asset",
    label = "not an asset parameter",
    note = "asset parameters are `&AssetContext`, `Config<C>` (the asset's config), `Res<R>` (a resource), `Input<A>` (the output of asset `A`), or `Partition<T>` (the partition materialized)",
    note = "in `Config<C>`, `C` must implement `serde::de::DeserializeOwned` and be `Send + Sync + 'static`; in `Res<R>`, `R` must be `Send + Sync + 'static`; in `Partition<T>`, `T` is `String`, `TimeWindow` or `PartitionRange`"
)]
pub trait AssetParam<'a>: Sized {
    /// Records what this parameter needs.
    fn declare(needs: &mut Requirements);
    /// Takes the parameter's value out of the step's scope.
    fn extract(scope: &'a StepScope) -> Result<Self, Error>;
}

#[diagnostic::do_not_recommend]
impl<'a> AssetParam<'a> for &'a AssetContext {
    fn declare(_: &mut Requirements) {}
    fn extract(scope: &'a StepScope) -> Result<Self, Error> {
        Ok(&scope.context)
    }
}

/// A resource injected by type: any `Send + Sync + 'static` value registered with
/// [`DefinitionsBuilder::resource`](crate::DefinitionsBuilder::resource), such as a
/// connection pool. Dereferences to the resource.
pub struct Res<R>(Arc<R>);

impl<R> Res<R> {
    /// Wraps a resource, for calling an asset function directly in a test.
    pub fn new(resource: R) -> Self {
        Res(Arc::new(resource))
    }

    pub(crate) fn from_arc(resource: Arc<R>) -> Self {
        Res(resource)
    }
}

impl<R> Clone for Res<R> {
    fn clone(&self) -> Self {
        Res(Arc::clone(&self.0))
    }
}

impl<R> Deref for Res<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.0
    }
}

impl<R: fmt::Debug> fmt::Debug for Res<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[diagnostic::do_not_recommend]
impl<'a, R: Send + Sync + 'static> AssetParam<'a> for Res<R> {
    fn declare(needs: &mut Requirements) {
        needs.resource::<R>();
    }
    fn extract(scope: &'a StepScope) -> Result<Self, Error> {
        scope.resource::<R>().map(Res::from_arc)
    }
}

/// The asset's config, deserialized (serde) from the run config over the type's defaults and
/// checked before the run starts. Dereferences to `C`.
pub struct Config<C>(Arc<C>);

impl<C> Config<C> {
    /// Wraps a config value, for calling an asset function directly in a test.
    pub fn new(config: C) -> Self {
        Config(Arc::new(config))
    }
}

impl<C> Deref for Config<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0
    }
}

impl<C: fmt::Debug> fmt::Debug for Config<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[diagnostic::do_not_recommend]
impl<'a, C: DeserializeOwned + Send + Sync + 'static> AssetParam<'a> for Config<C> {
    fn declare(needs: &mut Requirements) {
        needs.config::<C>();
    }
    fn extract(scope: &'a StepScope) -> Result<Self, Error> {
        scope.config::<C>().map(Config)
    }
}

/// The output of upstream asset `A`, handed over in memory. Dereferences to the output.
///
/// Taking an `Input<A>` makes `A` a dependency. The output type is `A`'s own, so a consumer
/// cannot disagree with its producer; writing the type out (`Input<A, T>`) is allowed and
/// only compiles when `T` is what `A` produces.
pub struct Input<A: Asset, T = <A as Asset>::Output> {
    value: Arc<T>,
    asset: PhantomData<fn() -> A>,
}

impl<A: Asset> Input<A> {
    /// Wraps a value, for calling an asset function directly in a test.
    pub fn new(value: A::Output) -> Self {
        Input {
            value: Arc::new(value),
            asset: PhantomData,
        }
    }

    /// The shared output.
    pub fn into_arc(self) -> Arc<A::Output> {
        self.value
    }
}

impl<A: Asset, T> Deref for Input<A, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<A: Asset, T: fmt::Debug> fmt::Debug for Input<A, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

#[diagnostic::do_not_recommend]
impl<'a, A: Asset> AssetParam<'a> for Input<A> {
    fn declare(needs: &mut Requirements) {
        needs.input::<A::Output>(A::KEY);
    }
    fn extract(scope: &'a StepScope) -> Result<Self, Error> {
        Ok(Input {
            value: scope.input::<A::Output>(A::KEY)?,
            asset: PhantomData,
        })
    }
}

/// The partition a step materializes, as `T`: `String` (the key; a range is an error),
/// [`TimeWindow`] (the window, of one partition or a whole range) or [`PartitionRange`].
/// Only partitioned assets take it (checked by `Definitions::build`). Dereferences to `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition<T = String>(pub T);

impl<T> Deref for Partition<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A type a [`Partition<T>`] can hold.
pub trait FromPartition: Sized {
    /// The value for the partitions of `ctx`, or why there is none.
    fn from_partition(ctx: &AssetContext) -> Result<Self, String>;
}

impl FromPartition for String {
    fn from_partition(ctx: &AssetContext) -> Result<Self, String> {
        match (ctx.partition_key(), ctx.partition_range()) {
            (Some(key), _) => Ok(key.to_owned()),
            (None, Some(range)) => Err(format!(
                "the step materializes the range `{range}`, not one key; take \
                 `Partition<PartitionRange>` or `Partition<TimeWindow>`"
            )),
            (None, None) => Err("the step materializes no partition".into()),
        }
    }
}

impl FromPartition for TimeWindow {
    fn from_partition(ctx: &AssetContext) -> Result<Self, String> {
        ctx.partition_time_window()
            .ok_or_else(|| "the asset's partitions have no time windows".into())
    }
}

impl FromPartition for PartitionRange {
    fn from_partition(ctx: &AssetContext) -> Result<Self, String> {
        ctx.partition_range()
            .cloned()
            .ok_or_else(|| "the step materializes no partition".into())
    }
}

#[diagnostic::do_not_recommend]
impl<'a, T: FromPartition + 'static> AssetParam<'a> for Partition<T> {
    fn declare(needs: &mut Requirements) {
        needs.partition::<T>();
    }
    fn extract(scope: &'a StepScope) -> Result<Self, Error> {
        T::from_partition(&scope.context)
            .map(Partition)
            .map_err(|reason| Error::Injection {
                asset: scope.context.asset_key().to_string(),
                param: std::any::type_name::<Self>(),
                reason,
            })
    }
}
