//! `log_template(body)`: a log line's shape with its variable parts masked
//! (see [`crate::template_miner::template`]), so SQL can group lines by
//! what they say rather than by their exact text —
//! `SELECT log_template(body), count(*) FROM logs GROUP BY 1` — and alert
//! rules can watch for a new or surging template.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::template_miner::template;

#[derive(Debug, PartialEq, Eq, Hash)]
struct LogTemplate {
    signature: Signature,
}

/// The `log_template` SQL function.
pub fn log_template_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(LogTemplate {
        signature: Signature::string(1, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for LogTemplate {
    fn name(&self) -> &str {
        "log_template"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return Err(DataFusionError::Plan(
                "log_template takes one argument".into(),
            ));
        };
        let lines = cast(&arg.to_array(args.number_rows)?, &DataType::Utf8)?;
        let lines = lines
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("log_template: not text".into()))?;
        let out: StringArray = (0..lines.len())
            .map(|i| (!lines.is_null(i)).then(|| template(lines.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}
