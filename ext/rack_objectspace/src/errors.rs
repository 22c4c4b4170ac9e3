//! The one place where core errors become Ruby exceptions: the classes are
//! defined in Ruby (lib/rack/objectspace/errors.rb) and looked up lazily, once
//! the GVL is held again.

use magnus::{Error, ExceptionClass, Module, RClass, RModule, Ruby};
use objectspace_core::analysis::AnalysisError;
use objectspace_core::Error as CoreError;

pub type RbResult<T> = Result<T, Error>;

/// `Rack::Objectspace::<name>`, falling back to RuntimeError if Ruby did not define it.
pub fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    let found = ruby
        .class_object()
        .const_get::<_, RModule>("Rack")
        // Rack::Objectspace is a class (the middleware), not a module.
        .and_then(|rack| rack.const_get::<_, RClass>("Objectspace"))
        .and_then(|os| os.const_get::<_, ExceptionClass>(name));
    found.unwrap_or_else(|_| ruby.exception_runtime_error())
}

/// Convert a core error.
pub fn to_ruby(ruby: &Ruby, err: CoreError) -> Error {
    let class = match &err {
        e if e.is_argument_error() => ruby.exception_arg_error(),
        CoreError::Parse { .. } => class(ruby, "ParseError"),
        CoreError::Store { .. } | CoreError::QueueFull { .. } => class(ruby, "StoreError"),
        _ => class(ruby, "Error"),
    };
    Error::new(class, err.to_string())
}

/// Convert an analysis error: bad arguments, store failures, else a ParseError
/// (a dump that cannot be read, with its line).
pub fn analysis_to_ruby(ruby: &Ruby, err: AnalysisError) -> Error {
    match err {
        AnalysisError::Core(e) if e.is_argument_error() || matches!(e, CoreError::Store { .. }) => {
            to_ruby(ruby, e)
        }
        other => Error::new(class(ruby, "ParseError"), other.to_string()),
    }
}

/// A Ruby ArgumentError.
pub fn argument(ruby: &Ruby, message: impl Into<String>) -> Error {
    Error::new(ruby.exception_arg_error(), message.into())
}
