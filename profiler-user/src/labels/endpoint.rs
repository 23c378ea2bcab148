//! The automatic `endpoint` label: the name of the route handler a sample runs in, read off the sample's own Python
//! frames, so profiles split by endpoint with no line of the app changed.
//!
//! Every web framework calls a route's handler from one function of its own (its *dispatch*): FastAPI's
//! `run_endpoint_function`, Starlette's `request_response` app, AnyIO's worker thread for sync FastAPI handlers,
//! Flask's `Flask.dispatch_request`, Django's `BaseHandler._get_response`. Those are recognised by their file and
//! function, never by the app's names; the handler is the application frame that dispatch called:
//!
//! - the innermost dispatch frame of the stack is the one that counts (a class-based view's own dispatch sits
//!   inside the framework's);
//! - from it toward the leaf, library *wrappers* are passed over (decorators' closures, `as_view`'s `view`): a
//!   library frame whose qualified name has `<locals>` (or, on Pythons before 3.11, which give only the bare
//!   name, one of a few common wrapper names);
//! - the first frame after them must be application code (not under site-packages, dist-packages or the standard
//!   library), and not one of Django's middleware hooks: then it is the handler. Anything else (FastAPI resolving
//!   dependencies or validating the response, a sync dependency's context manager, Starlette iterating a stream
//!   in a worker thread, Django rendering a template or resolving the URL) gets no label rather than a wrong one.
//!
//! Samples outside a request (a scheduler thread, the event loop between requests, app middleware) have no
//! dispatch frame, so no label. The route's path (`/api/earthquakes/phivolcs`) would be better still, but it
//! lives in the framework's route object, reachable only through the dispatching frame's locals, and the sampler
//! records code objects and instruction pointers, not frame locals.
use crate::aggregate::{Frame, FrameKind};

/// The label's key.
pub(crate) const ENDPOINT: &str = "endpoint";

/// A framework function that calls a route's handler.
struct Dispatch {
    /// How its file's path ends (site-packages or dist-packages before it).
    file: &'static str,
    /// Its qualified name; Pythons before 3.11 name the frame by the part after the last dot.
    qualname: &'static str,
}

const DISPATCHES: &[Dispatch] = &[
    // FastAPI: `await dependant.call(**values)` for `async def` handlers, `run_in_threadpool` for `def` ones.
    Dispatch { file: "/fastapi/routing.py", qualname: "run_endpoint_function" },
    // Plain Starlette routes: `await f(request)`, the inner `app` in Starlette 0.35 and later, the outer before.
    Dispatch { file: "/starlette/routing.py", qualname: "request_response.<locals>.app.<locals>.app" },
    Dispatch { file: "/starlette/routing.py", qualname: "request_response.<locals>.app" },
    Dispatch { file: "/starlette/routing.py", qualname: "websocket_session.<locals>.app.<locals>.app" },
    // `def` handlers of FastAPI and Starlette run in AnyIO's worker threads: `context.run(func, *args)`.
    Dispatch { file: "/anyio/_backends/_asyncio.py", qualname: "WorkerThread.run" },
    // Flask: `self.ensure_sync(self.view_functions[rule.endpoint])(**view_args)`, and class-based views.
    Dispatch { file: "/flask/app.py", qualname: "Flask.dispatch_request" },
    Dispatch { file: "/flask/views.py", qualname: "View.as_view.<locals>.view" },
    Dispatch { file: "/flask/views.py", qualname: "MethodView.dispatch_request" },
    // Django: `wrapped_callback(request, *callback_args, **callback_kwargs)`, and class-based views.
    Dispatch { file: "/django/core/handlers/base.py", qualname: "BaseHandler._get_response" },
    Dispatch { file: "/django/core/handlers/base.py", qualname: "BaseHandler._get_response_async" },
    Dispatch { file: "/django/views/generic/base.py", qualname: "View.as_view.<locals>.view" },
    Dispatch { file: "/django/views/generic/base.py", qualname: "View.dispatch" },
];

/// Library functions that only call what they wrap, by the bare names Pythons before 3.11 give them (3.11 and later
/// tell a wrapper by the `<locals>` of its qualified name).
const WRAPPER_NAMES: &[&str] =
    &["wrapper", "wrapped", "inner", "view", "app", "wrapped_app", "_wrapper_view", "_view_wrapper", "wrapped_view"];

/// Django's middleware hooks, which `_get_response` calls itself: app code, but middleware, not a view.
const DJANGO_MIDDLEWARE_HOOKS: &[&str] = &["process_view", "process_exception", "process_template_response"];

/// The handler a stack (leaf first, as the pipeline builds it) runs in, named as Python names it without the
/// enclosing function of a handler defined inside one (`create_app.<locals>.health` → `health`).
pub(crate) fn handler_of(frames: &[Frame]) -> Option<&str> {
    let is_python = |frame: &&Frame| frame.kind == FrameKind::Python;
    // Leaf first, the first dispatch frame found is the innermost; what it called lies before it, nearest first.
    let dispatch = frames.iter().position(|frame| is_python(&frame) && is_dispatch(frame))?;
    let called = frames[..dispatch].iter().rev().filter(is_python).find(|frame| !is_wrapper(frame))?;
    let file = called.file.as_deref()?;
    if is_library(file) || DJANGO_MIDDLEWARE_HOOKS.contains(&bare_name(&called.function)) {
        return None;
    }
    Some(without_enclosing_function(&called.function))
}

fn is_dispatch(frame: &Frame) -> bool {
    let Some(file) = frame.file.as_deref() else { return false };
    DISPATCHES.iter().any(|dispatch| {
        file.ends_with(dispatch.file)
            && is_library(file)
            && (*frame.function == *dispatch.qualname
                || (!frame.function.contains('.') && *frame.function == *bare_name(dispatch.qualname)))
    })
}

/// A library frame that only calls what it wraps.
fn is_wrapper(frame: &Frame) -> bool {
    let Some(file) = frame.file.as_deref() else { return false };
    is_library(file)
        && (frame.function.contains("<locals>")
            || (!frame.function.contains('.') && WRAPPER_NAMES.contains(&&*frame.function)))
}

/// Code the app did not write: installed packages, the standard library, frozen modules.
pub(crate) fn is_library(file: &str) -> bool {
    file.contains("/site-packages/")
        || file.contains("/dist-packages/")
        || file.starts_with('<')
        || ["/lib/python", "/lib64/python"].iter().any(|dir| {
            file.match_indices(dir).any(|(at, _)| file[at + dir.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// The function's own name: the part of a qualified name after the last dot.
pub(crate) fn bare_name(function: &str) -> &str {
    function.rsplit('.').next().unwrap_or(function)
}

/// `outer.<locals>.name` → `name`; a method's `Class.name` stays.
fn without_enclosing_function(function: &str) -> &str {
    function.rsplit_once("<locals>.").map_or(function, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "/srv/venv/lib/python3.11/site-packages";
    const APP: &str = "/srv/app/app.py";

    fn py(function: &str, file: &str) -> Frame {
        Frame::python(function, file)
    }

    fn lib(function: &str, path: &str) -> Frame {
        py(function, &format!("{SITE}/{path}"))
    }

    /// A stack given root first, as one reads a traceback, turned leaf first as the pipeline builds it; with a
    /// native frame and the context frames to show they are ignored.
    fn stack(root_first: Vec<Frame>) -> Vec<Frame> {
        let mut frames: Vec<Frame> = root_first.into_iter().rev().collect();
        frames.insert(0, Frame::native("PyObject_Call"));
        frames.push(Frame { kind: FrameKind::Context, ..Frame::native("uvicorn (7)") });
        frames
    }

    /// The event loop's frames down to a FastAPI route's app, on 3.11 (qualified names).
    fn fastapi_async_prefix() -> Vec<Frame> {
        vec![
            py("<module>", "/srv/venv/bin/uvicorn"),
            py("BaseEventLoop.run_forever", "/usr/lib/python3.11/asyncio/base_events.py"),
            py("Handle._run", "/usr/lib/python3.11/asyncio/events.py"),
            lib("RequestResponseCycle.run_asgi", "uvicorn/protocols/http/h11_impl.py"),
            // App middleware, written by the app: outside the route, so never the endpoint.
            py("timing_middleware", APP),
            lib("Router.app", "starlette/routing.py"),
            lib("Route.handle", "starlette/routing.py"),
            lib("request_response.<locals>.app", "starlette/routing.py"),
            lib("wrap_app_handling_exceptions.<locals>.wrapped_app", "starlette/_exception_handler.py"),
            lib("request_response.<locals>.app.<locals>.app", "starlette/routing.py"),
            lib("get_request_handler.<locals>.app", "fastapi/routing.py"),
        ]
    }

    #[test]
    fn an_async_fastapi_handler_is_the_frame_run_endpoint_function_called() {
        let mut frames = fastapi_async_prefix();
        frames.push(lib("run_endpoint_function", "fastapi/routing.py"));
        frames.push(py("weather_report", APP));
        frames.push(py("report", "/srv/app/weather.py"));
        frames.push(py("JSONEncoder.encode", "/usr/lib/python3.11/json/encoder.py"));
        assert_eq!(handler_of(&stack(frames)), Some("weather_report"));
    }

    #[test]
    fn fastapi_work_around_the_handler_has_no_endpoint() {
        // Resolving dependencies: app code (an async dependency) under the route, but not called by the dispatch.
        let mut dependency = fastapi_async_prefix();
        dependency.push(lib("solve_dependencies", "fastapi/dependencies/utils.py"));
        dependency.push(py("get_current_user", APP));
        assert_eq!(handler_of(&stack(dependency)), None);
        // Validating the response: a validator of the app's, called by pydantic.
        let mut validation = fastapi_async_prefix();
        validation.push(lib("serialize_response", "fastapi/routing.py"));
        validation.push(py("Quake.check_depth", APP));
        assert_eq!(handler_of(&stack(validation)), None);
        // Handing a `def` handler to the thread pool, on the event loop.
        let mut handoff = fastapi_async_prefix();
        handoff.push(lib("run_endpoint_function", "fastapi/routing.py"));
        handoff.push(lib("run_in_threadpool", "starlette/concurrency.py"));
        handoff.push(lib("run_sync", "anyio/to_thread.py"));
        assert_eq!(handler_of(&stack(handoff)), None);
    }

    fn worker_thread(called: Vec<Frame>) -> Vec<Frame> {
        let mut frames = vec![
            py("Thread._bootstrap", "/usr/lib/python3.11/threading.py"),
            py("Thread._bootstrap_inner", "/usr/lib/python3.11/threading.py"),
            lib("WorkerThread.run", "anyio/_backends/_asyncio.py"),
        ];
        frames.extend(called);
        stack(frames)
    }

    #[test]
    fn a_sync_handler_is_the_app_frame_the_worker_thread_runs() {
        let frames = worker_thread(vec![py("earthquakes", APP), py("parse_feed", "/srv/app/quakes.py")]);
        assert_eq!(handler_of(&frames), Some("earthquakes"));
        // Wrapped by a library's decorator: the wrapper is passed over.
        let frames =
            worker_thread(vec![lib("cached.<locals>.wrapper", "cachetools/__init__.py"), py("earthquakes", APP)]);
        assert_eq!(handler_of(&frames), Some("earthquakes"));
    }

    #[test]
    fn library_work_in_a_worker_thread_has_no_endpoint() {
        // A generator dependency entered in the thread pool, through contextlib.
        let frames = worker_thread(vec![
            py("_GeneratorContextManager.__enter__", "/usr/lib/python3.11/contextlib.py"),
            py("get_db", APP),
        ]);
        assert_eq!(handler_of(&frames), None);
        // A sync streaming response iterated in the thread pool.
        let frames = worker_thread(vec![lib("_next", "starlette/concurrency.py"), py("rows", APP)]);
        assert_eq!(handler_of(&frames), None);
        // An idle worker thread waiting for work.
        assert_eq!(handler_of(&worker_thread(vec![py("Queue.get", "/usr/lib/python3.11/queue.py")])), None);
    }

    #[test]
    fn bare_names_of_older_pythons_are_recognised() {
        let frames = stack(vec![
            lib("run", "anyio/_backends/_asyncio.py"),
            py("earthquakes", APP),
            py("parse_feed", "/srv/app/quakes.py"),
        ]);
        assert_eq!(handler_of(&frames), Some("earthquakes"));
        let frames = stack(vec![
            lib("app", "starlette/routing.py"),
            lib("app", "fastapi/routing.py"),
            lib("run_endpoint_function", "fastapi/routing.py"),
            py("weather_report", APP),
        ]);
        assert_eq!(handler_of(&frames), Some("weather_report"));
        // Starlette's app around FastAPI's, resolving dependencies: FastAPI's `app` is passed over as a wrapper,
        // and the dependency solver is not the app's code.
        let frames = stack(vec![
            lib("app", "starlette/routing.py"),
            lib("app", "fastapi/routing.py"),
            lib("solve_dependencies", "fastapi/dependencies/utils.py"),
            py("get_current_user", APP),
        ]);
        assert_eq!(handler_of(&frames), None);
    }

    #[test]
    fn flask_views_plain_and_class_based() {
        let wsgi = || {
            vec![
                lib("WSGIRequestHandler.run_wsgi", "werkzeug/serving.py"),
                lib("Flask.wsgi_app", "flask/app.py"),
                lib("Flask.full_dispatch_request", "flask/app.py"),
                lib("Flask.dispatch_request", "flask/app.py"),
            ]
        };
        let mut plain = wsgi();
        plain.extend([py("fibonacci", APP), py("fib", APP)]);
        assert_eq!(handler_of(&stack(plain)), Some("fibonacci"));
        let mut class_based = wsgi();
        class_based.extend([
            lib("View.as_view.<locals>.view", "flask/views.py"),
            lib("MethodView.dispatch_request", "flask/views.py"),
            py("ReportView.get", APP),
        ]);
        assert_eq!(handler_of(&stack(class_based)), Some("ReportView.get"));
        // before_request functions run outside dispatch_request.
        let before = stack(vec![
            lib("Flask.full_dispatch_request", "flask/app.py"),
            lib("Flask.preprocess_request", "flask/app.py"),
            py("load_user", APP),
        ]);
        assert_eq!(handler_of(&before), None);
    }

    #[test]
    fn django_views_not_its_middleware_or_templates() {
        let handler = || {
            vec![
                lib("WSGIHandler.__call__", "django/core/handlers/wsgi.py"),
                lib("convert_exception_to_response.<locals>.inner", "django/core/handlers/exception.py"),
                py("TimingMiddleware.__call__", "/srv/site/middleware.py"),
                lib("BaseHandler._get_response", "django/core/handlers/base.py"),
            ]
        };
        let mut decorated = handler();
        decorated.extend([
            lib("login_required.<locals>.decorator.<locals>._wrapper_view", "django/contrib/auth/decorators.py"),
            py("dashboard", "/srv/site/views.py"),
        ]);
        assert_eq!(handler_of(&stack(decorated)), Some("dashboard"));
        let mut hook = handler();
        hook.push(py("AuditMiddleware.process_view", "/srv/site/middleware.py"));
        assert_eq!(handler_of(&stack(hook)), None);
        let mut template = handler();
        template.extend([
            lib("SimpleTemplateResponse.render", "django/template/response.py"),
            py("currency", "/srv/site/templatetags/money.py"),
        ]);
        assert_eq!(handler_of(&stack(template)), None);
        // The middleware alone, before the handler is called.
        assert_eq!(handler_of(&stack(handler()[..3].to_vec())), None);
    }

    #[test]
    fn handlers_defined_in_a_factory_lose_the_factory_s_name() {
        let frames = worker_thread(vec![py("create_app.<locals>.health", APP)]);
        assert_eq!(handler_of(&frames), Some("health"));
    }

    #[test]
    fn a_dispatch_outside_installed_packages_is_not_a_framework_s() {
        // The app's own module that happens to be called routing.py.
        let frames = stack(vec![py("run_endpoint_function", "/srv/fastapi/routing.py"), py("handler", APP)]);
        assert_eq!(handler_of(&frames), None);
    }

    #[test]
    fn library_paths() {
        for file in [
            "/usr/lib/python3.11/json/encoder.py",
            "/usr/lib/python3/dist-packages/flask/app.py",
            "/home/u/.pyenv/versions/3.12.1/lib/python3.12/threading.py",
            "/srv/venv/lib64/python3.9/site-packages/anyio/to_thread.py",
            "<frozen importlib._bootstrap>",
        ] {
            assert!(is_library(file), "{file}");
        }
        for file in ["/srv/app/app.py", "/srv/lib/python_helpers/x.py", "app.py"] {
            assert!(!is_library(file), "{file}");
        }
    }
}
