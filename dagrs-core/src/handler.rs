//! Functions of a context and resources, for hooks and sensors: `|ctx, slack: Res<Slack>|
//! async { ... }`. Like an asset's parameters, each `Res<R>` declares what it needs, so a
//! missing resource is a `Definitions::build` error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::param::Res;
use crate::requirements::Requirements;
use crate::resources::Resources;

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A function taking a context `Ctx` and up to four resources (`Res<R>`), returning
/// `anyhow::Result<Out>` asynchronously. Implemented for every such closure or `async fn`;
/// `Args` only tells the implementations apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a hook or sensor function",
    note = "write `|ctx, a: Res<A>, b: Res<B>| async move {{ ... }}` (a context, then up to four resources) returning `anyhow::Result<_>`"
)]
pub trait Handler<Ctx, Args, Out>: Send + Sync + 'static {
    /// Records the resources the function takes.
    fn declare(needs: &mut Requirements);
    /// Calls it with the resources it takes.
    fn call(&self, ctx: Ctx, resources: &Resources) -> BoxFuture<anyhow::Result<Out>>;
}

macro_rules! handler {
    ($($resource:ident),*) => {
        #[allow(non_snake_case)]
        impl<F, Fut, Ctx, Out, $($resource,)*> Handler<Ctx, ($(Res<$resource>,)*), Out> for F
        where
            F: Fn(Ctx $(, Res<$resource>)*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = anyhow::Result<Out>> + Send + 'static,
            $($resource: Send + Sync + 'static,)*
        {
            fn declare(_needs: &mut Requirements) {
                $(_needs.resource::<$resource>();)*
            }

            fn call(&self, ctx: Ctx, _resources: &Resources) -> BoxFuture<anyhow::Result<Out>> {
                $(
                    let Some($resource) = _resources.get::<$resource>() else {
                        let name = std::any::type_name::<$resource>();
                        return Box::pin(async move {
                            Err(anyhow::anyhow!("resource `{name}` was not provided"))
                        });
                    };
                )*
                Box::pin((self)(ctx $(, Res::from_arc($resource))*))
            }
        }
    };
}

handler!();
handler!(R1);
handler!(R1, R2);
handler!(R1, R2, R3);
handler!(R1, R2, R3, R4);

/// A handler, type-erased.
type Call<Ctx, Out> = dyn Fn(Ctx, &Resources) -> BoxFuture<anyhow::Result<Out>> + Send + Sync;

/// A handler with its needs, type-erased.
pub(crate) struct Callback<Ctx, Out> {
    pub(crate) needs: Requirements,
    call: Arc<Call<Ctx, Out>>,
}

impl<Ctx: 'static, Out: 'static> Callback<Ctx, Out> {
    pub(crate) fn new<Args, H: Handler<Ctx, Args, Out>>(handler: H) -> Self {
        let mut needs = Requirements::default();
        H::declare(&mut needs);
        Callback {
            needs,
            call: Arc::new(move |ctx, resources| handler.call(ctx, resources)),
        }
    }

    pub(crate) fn call(&self, ctx: Ctx, resources: &Resources) -> BoxFuture<anyhow::Result<Out>> {
        (self.call)(ctx, resources)
    }
}

impl<Ctx, Out> Clone for Callback<Ctx, Out> {
    fn clone(&self) -> Self {
        Callback {
            needs: self.needs.clone(),
            call: Arc::clone(&self.call),
        }
    }
}

impl<Ctx, Out> fmt::Debug for Callback<Ctx, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}
