with source as (
    select * from {{ source('raw', 'customers') }}
),

deduplicated as (
    {{ deduplicate('source', 'customer_id', 'updated_at desc, _loaded_at desc') }}
)

select
    cast(customer_id as bigint) as customer_id,
    cast(email as {{ dbt.type_string() }}) as email,
    cast(first_name as {{ dbt.type_string() }}) as first_name,
    cast(last_name as {{ dbt.type_string() }}) as last_name,
    cast(country_code as {{ dbt.type_string() }}) as country_code,
    created_at,
    updated_at,
    _loaded_at
from deduplicated
