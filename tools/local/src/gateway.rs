//! API Gateway in front of in-process function routers: a request reaches a function only by
//! one of the template's `HttpApi` events, and only the function that event names.
//!
//! The same routing as the binaries' front ([`crate::binaries::BinaryStack::router`]), for
//! the stack that calls handlers in process: a route a function serves but the template does
//! not route is API Gateway's `404` here too, as it is once deployed.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Result, bail};
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower::ServiceExt;

use crate::binaries::{HttpRoute, http_routes, route_for};
use crate::template::Template;

/// The template's routes and each routed function's router, by logical id.
pub struct Gateway {
    routes: Vec<HttpRoute>,
    functions: HashMap<String, Router>,
}

impl Gateway {
    /// Routes by `template`'s `HttpApi` events to `functions`; a function the template routes
    /// to without a router here is an error (it would answer nothing).
    pub fn new(template: &Template, functions: HashMap<String, Router>) -> Result<Gateway> {
        let routes = http_routes(template)?;
        for route in &routes {
            if !functions.contains_key(&route.function_id) {
                bail!(
                    "{} routes {} {} with no in-process router",
                    route.function_id,
                    route.method,
                    route.path
                );
            }
        }
        Ok(Gateway { routes, functions })
    }

    /// The HTTP front: each request to the function its route names, unchanged.
    pub fn router(self) -> Router {
        let gateway = Arc::new(self);
        Router::new().fallback(move |request: Request| {
            let gateway = gateway.clone();
            async move { gateway.serve(request).await }
        })
    }

    async fn serve(&self, request: Request) -> Response {
        let function = route_for(
            &self.routes,
            request.method().as_str(),
            request.uri().path(),
        )
        .and_then(|(route, _)| {
            let router = self.functions.get(&route.function_id)?;
            Some((route.function_id.clone(), router))
        });
        let Some((function_id, function)) = function else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": "Not Found"})),
            )
                .into_response();
        };
        // The function's AWS requests carry its own identity (`crate::identity`).
        match crate::identity::as_function(&function_id, function.clone().oneshot(request)).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::{get, post};

    use super::*;

    const TEMPLATE: &str = r#"
Resources:
  ThingsFunction:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        ListThings:
          Type: HttpApi
          Properties:
            Method: GET
            Path: /things
        GetThing:
          Type: HttpApi
          Properties:
            Method: get
            Path: /things/{id}
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        MakeOther:
          Type: HttpApi
          Properties:
            Method: POST
            Path: /other
"#;

    fn template() -> Template {
        let path = std::env::temp_dir().join(format!(
            "gateway-template-{}-{}.yaml",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, TEMPLATE).unwrap();
        let template = Template::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        template
    }

    async fn call(router: &Router, method: &str, path: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn only_the_templates_routes_reach_a_function_and_only_the_one_it_names() {
        // Given functions that serve more than the template routes to them
        let things = Router::new()
            .route(
                "/things",
                get(|| async { "things" }).post(|| async { "made" }),
            )
            .route("/things/{id}", get(|| async { "a thing" }))
            .route("/things/{id}/retry", post(|| async { "retried" }));
        let other = Router::new().route("/other", post(|| async { "other" }));
        let gateway = Gateway::new(
            &template(),
            HashMap::from([
                ("ThingsFunction".to_string(), things),
                ("OtherFunction".to_string(), other),
            ]),
        )
        .unwrap()
        .router();

        // Then the routed ones reach their function
        assert_eq!(
            call(&gateway, "GET", "/things").await,
            (200, "things".into())
        );
        assert_eq!(
            call(&gateway, "GET", "/things/1").await,
            (200, "a thing".into())
        );
        assert_eq!(
            call(&gateway, "POST", "/other").await,
            (200, "other".into())
        );
        // And what the template lacks is API Gateway's 404, whatever the function serves
        let not_found = (404, r#"{"message":"Not Found"}"#.to_string());
        assert_eq!(call(&gateway, "POST", "/things").await, not_found);
        assert_eq!(call(&gateway, "POST", "/things/1/retry").await, not_found);
        assert_eq!(call(&gateway, "GET", "/nowhere").await, not_found);
    }

    #[test]
    fn a_routed_function_without_a_router_is_refused() {
        let only_things = HashMap::from([("ThingsFunction".to_string(), Router::new())]);
        let refused = Gateway::new(&template(), only_things).err().unwrap();
        assert!(refused.to_string().contains("OtherFunction"), "{refused}");
    }
}
