with source as (
    select * from {{ source('raw', 'products') }}
),

deduplicated as (
    {{ deduplicate('source', 'product_id', 'updated_at desc, _loaded_at desc') }}
)

select
    cast(product_id as bigint) as product_id,
    cast(sku as {{ dbt.type_string() }}) as sku,
    cast(name as {{ dbt.type_string() }}) as product_name,
    cast(category as {{ dbt.type_string() }}) as category,
    {{ money('unit_price') }} as unit_price,
    is_active,
    created_at,
    updated_at,
    _loaded_at
from deduplicated
