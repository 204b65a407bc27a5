//! Routers that know their routes: every route of this crate's routers is added through
//! [`Routes`], which keeps its method and path beside the axum router it builds.
//!
//! axum cannot list a router's routes, and what a function serves must equal what the
//! template routes to it and what `docs/openapi.yaml` documents: API Gateway answers `404`
//! for any route the template lacks, whatever the function would do with it. Kept here, the
//! list is the router's own and cannot drift from it.

use std::convert::Infallible;
use std::fmt;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::{self, MethodRouter};
use tower::{Layer, Service};

/// One route, as API Gateway keys it (`GET /api/numbers/{id}`): a method and a path template
/// whose `{name}` segments are parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub method: Method,
    pub path: &'static str,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// An axum router and the key of every route added to it. `St` is the state its handlers
/// still need (none once [`Routes::with_state`] gave it).
pub struct Routes<St = ()> {
    router: Router<St>,
    keys: Vec<RouteKey>,
}

impl<St> Default for Routes<St>
where
    St: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Routes {
            router: Router::new(),
            keys: Vec::new(),
        }
    }
}

impl<St> Routes<St>
where
    St: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Routes::default()
    }

    /// `GET path` answered by `handler`.
    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, St>,
        T: 'static,
    {
        self.add(Method::GET, path, routing::get(handler))
    }

    /// `POST path` answered by `handler`.
    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, St>,
        T: 'static,
    {
        self.add(Method::POST, path, routing::post(handler))
    }

    /// `PATCH path` answered by `handler`.
    pub fn patch<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, St>,
        T: 'static,
    {
        self.add(Method::PATCH, path, routing::patch(handler))
    }

    /// `DELETE path` answered by `handler`.
    pub fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, St>,
        T: 'static,
    {
        self.add(Method::DELETE, path, routing::delete(handler))
    }

    /// The one place a route enters the router: `route` answers `method` alone, so the key
    /// kept is what the router serves. (axum merges routes of one path.)
    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<St>) -> Self {
        self.keys.push(RouteKey { method, path });
        self.router = self.router.route(path, route);
        self
    }

    /// Both routers' routes in one.
    pub fn merge(mut self, other: Routes<St>) -> Self {
        self.keys.extend(other.keys);
        self.router = self.router.merge(other.router);
        self
    }

    /// `layer` around every route ([`Router::layer`]).
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: Layer<routing::Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Routes {
            router: self.router.layer(layer),
            keys: self.keys,
        }
    }

    /// The routes with the state their handlers take ([`Router::with_state`]).
    pub fn with_state<St2>(self, state: St) -> Routes<St2> {
        Routes {
            router: self.router.with_state(state),
            keys: self.keys,
        }
    }

    /// Every route, in the order added.
    pub fn keys(&self) -> &[RouteKey] {
        &self.keys
    }

    pub fn into_router(self) -> Router<St> {
        self.router
    }
}

impl From<Routes> for Router {
    fn from(routes: Routes) -> Router {
        routes.router
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    async fn status(router: Router, method: Method, path: &str) -> u16 {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        router.oneshot(request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn the_keys_are_the_routes_the_router_serves() {
        // Given routes added one method at a time, two on one path, and a merged router
        let routes = Routes::<()>::new()
            .get("/things", || async { "list" })
            .delete("/things/{id}", || async { "gone" })
            .patch("/things/{id}", || async { "changed" })
            .merge(Routes::new().post("/other", || async { "made" }));

        // Then its keys are those four, in the order added
        let keys: Vec<String> = routes.keys().iter().map(ToString::to_string).collect();
        assert_eq!(
            keys,
            [
                "GET /things",
                "DELETE /things/{id}",
                "PATCH /things/{id}",
                "POST /other"
            ]
        );
        // And the router answers exactly those: another method on a known path is 405
        let router = routes.into_router();
        assert_eq!(status(router.clone(), Method::GET, "/things").await, 200);
        assert_eq!(
            status(router.clone(), Method::DELETE, "/things/1").await,
            200
        );
        assert_eq!(
            status(router.clone(), Method::PATCH, "/things/1").await,
            200
        );
        assert_eq!(status(router.clone(), Method::POST, "/other").await, 200);
        assert_eq!(status(router.clone(), Method::GET, "/things/1").await, 405);
        assert_eq!(status(router, Method::GET, "/nowhere").await, 404);
    }
}
