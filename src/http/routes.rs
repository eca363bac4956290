//! Every endpoint of the control API, as a table the router reads and the
//! HTTP reference (`docs/src/reference/http-api.md`) is generated from.
//!
//! Invariants: [`route`] is the only place that maps a method and path to
//! an endpoint, and every [`Route`] has a line in [`ENDPOINTS`] whose
//! example path routes to it (the tests below), so the reference cannot
//! list an endpoint that does not exist or miss one that does.

use hyper::Method;

/// An endpoint of the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ListJobs,
    CreateJob,
    ShowJob,
    EditJob,
    DeleteJob,
    JobHistory,
    CopyAgain,
    Act,
    ListDatasources,
    CreateDatasource,
    DeleteDatasource,
    DatasourceTables,
    Check,
}

/// One line of the reference.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub what: &'static str,
    pub route: Route,
}

/// The reference, in the order a reader meets the endpoints.
pub const ENDPOINTS: [Endpoint; 13] = [
    Endpoint {
        method: "GET",
        path: "/api/v1/jobs",
        what: "Every job, each as `GET /api/v1/jobs/{name}` shows it.",
        route: Route::ListJobs,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/jobs",
        what: "Creates a job (state `created`): `{\"name\", \"source_url\" or \"source\" (a datasource), \"sink_url\" or \"sink\", and any job setting in lower case}`. 201.",
        route: Route::CreateJob,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/jobs/{name}",
        what: "State, phase, error, worker, allowed actions, the request pending, records, bytes, events/s, lag, retained WAL, `safe_wal_size`, the cap, `wal_status`, idle and emit event time, copy progress, tables that need a re-copy. URLs redacted.",
        route: Route::ShowJob,
    },
    Endpoint {
        method: "PATCH",
        path: "/api/v1/jobs/{name}",
        what: "`{\"tables\": \"schema.a, schema.b\"}`: replaces the job's tables; added ones are copied while it streams.",
        route: Route::EditJob,
    },
    Endpoint {
        method: "DELETE",
        path: "/api/v1/jobs/{name}",
        what: "Deletes a job that is not running: drops its slot and publication, keeps the destination tables.",
        route: Route::DeleteJob,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/jobs/{name}/history",
        what: "The job's runs, newest first.",
        route: Route::JobHistory,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/jobs/{name}/snapshot",
        what: "`{\"tables\": [\"schema.table\", ...]}`: copies tables again while the job streams. 202.",
        route: Route::CopyAgain,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/jobs/{name}/{action}",
        what: "`start`, `pause`, `resume`, `stop` (`{\"cleanup\": true}` also drops the slot and publication), `restart`, `retry`. Waits up to `?wait=10s` for the state: 200 when reached, 202 while pending, 409 with `allowed_actions` when the state does not allow it.",
        route: Route::Act,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/datasources",
        what: "Every saved datasource, its URL redacted.",
        route: Route::ListDatasources,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/datasources",
        what: "`{\"name\", \"role\": \"source\" or \"sink\", \"url\"}`: saves a source or a sink; its URL stays on the server. 201.",
        route: Route::CreateDatasource,
    },
    Endpoint {
        method: "DELETE",
        path: "/api/v1/datasources/{name}",
        what: "Deletes a datasource.",
        route: Route::DeleteDatasource,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/datasources/{name}/tables",
        what: "A source's tables with the catalog's estimated rows.",
        route: Route::DatasourceTables,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/check",
        what: "A job definition, as for creating one: the `walpipe check` findings (`level`, `text` with its fix) and the count of errors. Nothing is saved.",
        route: Route::Check,
    },
];

/// The endpoint `method` and `parts` (the path's segments) name, if any.
pub fn route(method: &Method, parts: &[&str]) -> Option<Route> {
    let ["api", "v1", rest @ ..] = parts else { return None };
    Some(match (method, rest) {
        (&Method::GET, ["jobs"]) => Route::ListJobs,
        (&Method::POST, ["jobs"]) => Route::CreateJob,
        (&Method::GET, ["jobs", _]) => Route::ShowJob,
        (&Method::PATCH, ["jobs", _]) => Route::EditJob,
        (&Method::DELETE, ["jobs", _]) => Route::DeleteJob,
        (&Method::GET, ["jobs", _, "history"]) => Route::JobHistory,
        (&Method::POST, ["jobs", _, "snapshot"]) => Route::CopyAgain,
        (&Method::POST, ["jobs", _, _]) => Route::Act,
        (&Method::GET, ["datasources"]) => Route::ListDatasources,
        (&Method::POST, ["datasources"]) => Route::CreateDatasource,
        (&Method::DELETE, ["datasources", _]) => Route::DeleteDatasource,
        (&Method::GET, ["datasources", _, "tables"]) => Route::DatasourceTables,
        (&Method::POST, ["check"]) => Route::Check,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes_to(endpoint: &Endpoint) -> Option<Route> {
        let method = Method::from_bytes(endpoint.method.as_bytes()).ok()?;
        let path = endpoint.path.replace("{name}", "orders").replace("{action}", "pause");
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        route(&method, &parts)
    }

    #[test]
    fn every_documented_endpoint_routes_to_its_route() {
        for endpoint in &ENDPOINTS {
            assert_eq!(routes_to(endpoint), Some(endpoint.route), "{} {}", endpoint.method, endpoint.path);
        }
    }

    #[test]
    fn every_route_is_documented() {
        use Route::*;
        let all = [
            ListJobs,
            CreateJob,
            ShowJob,
            EditJob,
            DeleteJob,
            JobHistory,
            CopyAgain,
            Act,
            ListDatasources,
            CreateDatasource,
            DeleteDatasource,
            DatasourceTables,
            Check,
        ];
        for route in all {
            // A new route fails to compile here until it is listed above.
            match route {
                ListJobs | CreateJob | ShowJob | EditJob | DeleteJob | JobHistory | CopyAgain | Act
                | ListDatasources | CreateDatasource | DeleteDatasource | DatasourceTables | Check => {}
            }
            assert!(ENDPOINTS.iter().any(|e| e.route == route), "{route:?} has no line in ENDPOINTS");
        }
        assert_eq!(route(&Method::PUT, &["api", "v1", "jobs"]), None);
    }
}
