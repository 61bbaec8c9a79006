select
    cast(_source_file as {{ dbt.type_string() }}) as source_file,
    cast(_source_line as integer) as source_line,
    cast(raw_line as {{ dbt.type_string() }}) as raw_line,
    cast(reason as {{ dbt.type_string() }}) as reject_reason,
    _loaded_at
from {{ source('raw', 'marketing_spend_rejects') }}
