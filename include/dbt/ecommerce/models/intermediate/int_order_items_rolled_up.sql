{#- Order lines rolled up to one row per order (orders without lines have no row here). -#}
select
    order_id,
    sum(quantity) as item_count,
    {{ money('sum(gross_amount)') }} as gross_amount,
    {{ money('sum(discount_amount)') }} as discount_amount,
    max(_loaded_at) as _loaded_at
from {{ ref('stg_order_items') }}
group by order_id
